#!/bin/bash
# The log objectives on a loss that can reach 0 (README "The log objectives"): meta-train
# train.py's default recipe with --objective=log (per-step log, floored), log_mean (the log of
# the unroll's mean loss, train.py's default) and sum, seeds 0 1 2 each, on
# bench/separable_logistic.py, then evaluate each on 200 held-out instances against the
# lr-tuned baselines (tuned once: they do not depend on the meta-training seed).
# Usage: [PYTHON=python] bench/log_objective_result.sh [OUT]   (about 1 min per training + evaluation)
set -e
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
BENCH=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-/tmp/l2l_log_objective}
EPOCHS=${EPOCHS:-300}
INSTANCES=${INSTANCES:-200}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$REPO:$BENCH"
PROBLEM=separable_logistic:separable_logistic
PY=${PYTHON:-python}
cd "$REPO"
mkdir -p "$OUT"
for baseline in SGD NAG RMSProp Adam; do
  "$PY" evaluate.py --problem=$PROBLEM --optimizer=$baseline --num_epochs="$INSTANCES" \
    --tuning_epochs=10 --output_json="$OUT/$baseline.json" | tail -n 1
done
for objective in ${OBJECTIVES:-log log_mean sum}; do
  for seed in ${SEEDS:-0 1 2}; do
    run="$OUT/${objective}_seed$seed"
    "$PY" train.py --problem=$PROBLEM --num_epochs="$EPOCHS" --evaluation_period=50 \
      --log_period=50 --objective="$objective" --seed="$seed" --save_path="$run" --overwrite \
      || echo "objective=$objective seed=$seed: train.py exited $? (nothing better than untrained)"
    if [ -f "$run/config.json" ]; then
      "$PY" evaluate.py --problem=$PROBLEM --optimizer=L2L --path="$run" \
        --num_epochs="$INSTANCES" --output_json="$run.json" | tail -n 1 \
        | sed "s/^/objective=$objective seed=$seed: /"
    fi
  done
done
