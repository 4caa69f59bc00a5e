#!/bin/sh
# Sinusoid regression (Finn et al. 2017 setup) for the MAML family and a pretrained baseline,
# seeds 0, 1 and 2 one after the other, 10,000 meta-iterations per (method, K).
# Writes /tmp/l2l_sinusoid/seed_<s>/results.json and /tmp/l2l_sinusoid/results_seeds.json and
# prints the mean +- std table (README.md quotes it). A rerun resumes from the checkpoints.
cd "$(dirname "$0")/.." && exec nice -n 10 python maml.py --problem=sinusoid \
  --num_iterations="${ITERATIONS:-10000}" --shots=5,10,20 --eval_steps=1,10 \
  --seeds="${SEEDS:-0,1,2}" --workdir="${WORKDIR:-/tmp/l2l_sinusoid}" "$@"
