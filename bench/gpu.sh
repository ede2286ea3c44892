#!/usr/bin/env bash
# What a lent GPU runs first: bench/gpu.py under an 8-minute limit, its JSON in $OUT (the device tool's
# folder that comes back) or the working directory. docs/benchmarks.md records the figures with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/gpu.json"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout 480 python bench/gpu.py --out "$out" "$@"
