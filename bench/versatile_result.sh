#!/bin/sh
# The versatile learned optimizer (README "A versatile learned optimizer"): meta-train
# nets.PerParameterMLP with PES over the "train" task suite (train.py --suite defaults: 3,000
# meta-steps, 4 tasks and 2 antithetic pairs per step, horizon 1,000), then evaluate it on
# the "held_out" suite against per-task lr-tuned Adam at 1,000 and 2,000 steps (10 runs per
# task, Adam tuned over 10 rates on 3 disjoint runs). With --pretrained, skips the training and
# evaluates the shipped optimizer (l2l.pretrained()).
# Writes runs under ${OUT:-runs}/ and prints the table.
set -e
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
if [ "$1" = "--pretrained" ]; then
  optimizer="--optimizer=pretrained"
  name=pretrained
else
  start=$(date +%s)
  python train.py --suite=train --save_path="$out/versatile"
  echo "meta-training took $(( $(date +%s) - start ))s"
  optimizer="--path=$out/versatile"
  name=versatile
fi
python evaluate.py --suite=held_out $optimizer --num_steps=1000 --num_epochs=10 \
  --tuning_epochs=3 --output_json="$out/${name}_held_out.json" --plot="$out/${name}_held_out.png"
