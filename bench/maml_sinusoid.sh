#!/bin/sh
# Sinusoid regression (Finn et al. 2017 setup) for the MAML family and a pretrained baseline.
# Writes /tmp/l2l_sinusoid/results.json and prints the table (docs/maml.md quotes it).
cd "$(dirname "$0")/.." && exec nice -n 10 python maml.py --problem=sinusoid \
  --num_iterations="${ITERATIONS:-8000}" --shots=5,10,20 --eval_steps=1,10 \
  --workdir="${WORKDIR:-/tmp/l2l_sinusoid}" "$@"
