#!/bin/sh
# The paper's quadratic result against lr-tuned baselines (README "Results"), for the paper's
# Gaussian quadratics and the 2016 code's U[0, 1) ones: meta-train with train.py's defaults and
# --objective=log (the default when the README's table was made; log_mean is now), then
# evaluate.py --optimizer=all on 100 held-out instances for 100 and 200 steps.
# Writes runs under ${OUT:-runs}/ and prints the tables.
set -e
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
for problem in quadratic quadratic-uniform; do
  start=$(date +%s)
  python train.py --problem="$problem" --save_path="$out/$problem" --overwrite --objective=log
  echo "meta-training $problem took $(( $(date +%s) - start ))s"
  for steps in 100 200; do
    python evaluate.py --problem="$problem" --optimizer=all --path="$out/$problem" \
      --num_epochs=100 --num_steps="$steps" --output_json="$out/${problem}_$steps.json"
  done
done
