#!/usr/bin/env bash
# Runs the GPU throughput benchmark after device_setup.sh; weights in .gpuw/ (bench/gpu/make_weights.py).
#   bash bench/gpu/device_run.sh [extra gpu_throughput.py arguments]
set -euo pipefail
root=/tmp/neurolabel-gpu
export LD_LIBRARY_PATH="$(cat "$root/libpython_dir" 2>/dev/null || true)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
out="${OUT:-.}"
"$root/venv/bin/python" bench/gpu/gpu_throughput.py --weights-dir .gpuw --save-predictions "$out/gpu_predictions.json" "$@" | tee "$out/gpu_result.json"
