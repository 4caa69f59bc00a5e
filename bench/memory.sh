#!/bin/bash
# Peak memory of MAML meta-gradients: plain vs checkpointed vs iMAML at 10, 100 and 500 inner
# steps, then a conv net whose plain 100-step unroll does not fit in 24 GiB, run checkpointed
# within a 10 GiB address-space budget. Each configuration runs in its own subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
PYTHON=${PYTHON:-python}
nice -n 10 "$PYTHON" bench/memory.py --output_json=runs/memory_mlp.json
nice -n 10 "$PYTHON" bench/memory.py --conv --budget_gib=10 --output_json=runs/memory_conv.json
