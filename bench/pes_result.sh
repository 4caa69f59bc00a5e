#!/bin/sh
# The PES result (README "Long horizons at bounded memory"): a 1x8 coordinatewise LSTM
# meta-trained from scratch with PES on 1,000-step horizons of the quadratic problem
# (truncations of 10 steps, 8 antithetic pairs), then evaluate.py --optimizer=all at 1,000 steps
# on 100 held-out instances (baselines' learning rates tuned at 1,000 steps on 3 instances per
# grid point). CONTROL=1 also trains the same net with truncated backprop on the same horizons.
# Writes runs under ${OUT:-runs}/ and prints the tables; extra arguments go to train.py.
set -e
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
common="--problem=quadratic --objective=log --num_steps=1000 --unroll_length=10 --net_layers=8 \
  --learning_rate=1e-3 --num_epochs=200 --evaluation_period=20 --evaluation_epochs=10 \
  --log_period=10 --overwrite"
start=$(date +%s)
python train.py $common --gradient=pes --pes_particles=8 --pes_std=0.01 \
  --save_path="$out/quadratic_pes" "$@"
echo "PES meta-training took $(( $(date +%s) - start ))s"
python evaluate.py --problem=quadratic --optimizer=all --path="$out/quadratic_pes" \
  --num_steps=1000 --num_epochs=100 --tuning_epochs=3 \
  --output_json="$out/quadratic_pes_1000.json" --plot="$out/quadratic_pes_1000.png"
if [ "${CONTROL:-0}" = 1 ]; then
  python train.py $common --gradient=backprop --save_path="$out/quadratic_tbptt" "$@"
  python evaluate.py --problem=quadratic --optimizer=L2L --path="$out/quadratic_tbptt" \
    --num_steps=1000 --num_epochs=100 --output_json="$out/quadratic_tbptt_1000.json"
fi
