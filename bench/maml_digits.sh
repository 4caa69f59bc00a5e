#!/bin/sh
# 5-way 1-shot and 5-shot digits (scikit-learn; classes 0-4 meta-train, 5-9 meta-test).
# Writes /tmp/l2l_digits/results.json and prints the table (docs/maml.md quotes it).
cd "$(dirname "$0")/.." && exec nice -n 10 python maml.py --problem=digits --shots=1,5 \
  --hidden=64,64 --inner_lr=0.4 --inner_steps=1 --eval_steps=1,5 --k_query=5 \
  --meta_batch_size=16 --num_iterations="${ITERATIONS:-2000}" --log_every=500 \
  --workdir="${WORKDIR:-/tmp/l2l_digits}" "$@"
