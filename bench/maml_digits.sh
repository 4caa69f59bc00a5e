#!/bin/sh
# 5-way 1-shot and 5-shot digits (scikit-learn): meta-train on the 8 rotations / reflections of
# digits 0-4 (40 classes), meta-test on the plain digits 5-9. Settings chosen on the validation
# split (SPLIT=validation: meta-train on 0-2, evaluate on the transforms of 3-4; see README).
# Writes /tmp/l2l_digits/results.json and prints the table (README.md quotes it); a rerun
# resumes, and `--methods=iMAML` (say) adds one method to existing results (results.json merges).
# iMAML: 10 inner steps of size 0.1 on the proximal objective with lam 1 = 1 / (0.1 x 10), 5 CG
# steps (gradient descent, --imaml_solver=gd: the solver of the README's digits table).
cd "$(dirname "$0")/.." && exec nice -n 10 python maml.py --problem=digits --shots=1,5 \
  --hidden=64,64 --inner_lr=0.1 --inner_steps=1 --eval_steps=1,5 --k_query=5 \
  --meta_batch_size=16 --num_iterations="${ITERATIONS:-2000}" --finetune_lr=0.01 \
  --finetune_steps=100 --log_every=500 --split="${SPLIT:-test}" \
  --imaml_lam=1 --imaml_inner_steps=10 --imaml_cg_steps=5 --imaml_solver=gd \
  --workdir="${WORKDIR:-/tmp/l2l_digits}" "$@"
