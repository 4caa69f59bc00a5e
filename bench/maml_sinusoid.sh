#!/bin/sh
# Sinusoid regression (Finn et al. 2017 setup) for the MAML family, iMAML and a pretrained
# baseline, seeds 0, 1 and 2 one after the other, 10,000 meta-iterations per (method, K).
# Writes /tmp/l2l_sinusoid/seed_<s>/results.json and /tmp/l2l_sinusoid/results_seeds.json and
# prints the mean +- std table (README.md quotes it). A rerun resumes from the checkpoints;
# `--methods=iMAML` (say) adds one method to existing results (results.json merges).
# iMAML: 10 inner steps of size 0.01 on the proximal objective with lam 10 = 1 / (0.01 x 10),
# 5 CG steps; it goes to nan before 1,000 iterations (README: not in the sinusoid table).
cd "$(dirname "$0")/.." && exec nice -n 10 python maml.py --problem=sinusoid \
  --num_iterations="${ITERATIONS:-10000}" --shots=5,10,20 --eval_steps=1,10 \
  --imaml_lam=10 --imaml_inner_steps=10 --imaml_cg_steps=5 \
  --seeds="${SEEDS:-0,1,2}" --workdir="${WORKDIR:-/tmp/l2l_sinusoid}" "$@"
