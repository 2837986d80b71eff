#!/usr/bin/env bash
# On the GPU host, after device_setup.sh: fine-tune the classifier recipes (train_gpu.py), then serve the
# kept model with Triton on the GPU and measure it (gpu_throughput.py). Pretrained encoder in .gpuenc/.
#   bash bench/gpu/device_train_and_bench.sh [train deadline seconds]
set -uo pipefail
root=/tmp/neurolabel-gpu
out="${OUT:-/tmp/neurolabel-gpu-out}"
mkdir -p "$out" "$root/bench"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=4
python3 bench/gpu/train_gpu.py --encoder-dir .gpuenc --out "$out" --recipes "${RECIPES:-l3,l3-big,l4,l6}" \
    --deadline-seconds "${1:-240}" --bench-dir "$root/bench" 2>&1 | grep -v "Loading weights" | tee "$out/train.log"
export LD_LIBRARY_PATH="$(cat "$root/libpython_dir" 2>/dev/null || true)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$root/venv/bin/python" bench/gpu/gpu_throughput.py --weights-dir "$root/bench/weights" --version-dir "$root/bench/version" \
    --reports "${REPORTS:-121556}" 2>&1 | tail -40 | tee "$out/gpu_result.txt"
