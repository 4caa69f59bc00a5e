#!/bin/bash
# The log objective's floor on a loss that can reach 0 (README "The log objective's floor"):
# meta-train with train.py's defaults (objective=log) on bench/separable_logistic.py, then
# evaluate against lr-tuned baselines. Run it once at the commit before the floor (15fd8a6, e.g.
# in a `git worktree add /tmp/before 15fd8a6`, REPO=/tmp/before) and once at HEAD.
set -e
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
BENCH=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-/tmp/l2l_log_floor}
EPOCHS=${EPOCHS:-300}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$REPO:$BENCH"
cd "$REPO"
python train.py --problem=separable_logistic:separable_logistic --num_epochs="$EPOCHS" \
  --evaluation_period=50 --log_period=50 --save_path="$OUT" --overwrite || true
python evaluate.py --problem=separable_logistic:separable_logistic --optimizer=all \
  --path="$OUT" --num_epochs=50 --tuning_epochs=10
