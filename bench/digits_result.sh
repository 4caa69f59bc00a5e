#!/bin/sh
# The MNIST-MLP result on scikit-learn's 8x8 digits (README "Results"): meta-train the digits
# config (1x20 sigmoid MLP, 100 steps) with train.py's defaults and --objective=log (the default
# when these results were made), evaluate.py --optimizer=all on
# 100 held-out instances for 100 and 200 steps, then the paper's generalization runs at 200 steps
# (40 hidden units; two hidden layers of 20; ReLU). With MNIST data (--data_dir or
# L2L_DATA_DIR), PROBLEM=mnist runs the same on MNIST.
# Writes runs under ${OUT:-runs}/ and prints the tables; extra arguments go to train.py
# (e.g. --rescale=1 or --curriculum=20,50,100).
set -e
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
problem="${PROBLEM:-digits}"
name="${NAME:-$problem}"
mkdir -p "$out"
start=$(date +%s)
python train.py --problem="$problem" --save_path="$out/$name" --overwrite --objective=log "$@"
echo "meta-training $name took $(( $(date +%s) - start ))s"
for steps in 100 200; do
  python evaluate.py --problem="$problem" --optimizer=all --path="$out/$name" \
    --num_epochs=100 --num_steps="$steps" --output_json="$out/${name}_$steps.json" \
    --plot="$out/${name}_$steps.png"
done
for variant in "40:sigmoid:40" "20,20:sigmoid:2layers" "20:relu:relu"; do
  sizes="${variant%%:*}"; rest="${variant#*:}"; activation="${rest%%:*}"; tag="${rest#*:}"
  python evaluate.py --problem="$problem" --optimizer=all --path="$out/$name" \
    --num_epochs=100 --num_steps=200 --hidden_sizes="$sizes" --activation="$activation" \
    --output_json="$out/${name}_200_$tag.json"
done
