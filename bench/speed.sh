#!/bin/sh
# The speed table of BUILD.md: l2l against the PyTorch / JAX / plain-TF peers of ../shared/peers
# on both peer configs, every case in its own process, interleaved over REPEATS repeats.
# Peers need their virtual environments (see the peers' README); missing ones are skipped.
# Usage: [REPEATS=3] [STEPS=20] bench/speed.sh [more bench.speed flags]
set -e
cd "$(dirname "$0")/.."
exec python -m bench.speed --repeats "${REPEATS:-1}" --steps "${STEPS:-20}" "$@"
