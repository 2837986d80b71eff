#!/usr/bin/env bash
# GPU host set-up for bench/gpu/gpu_throughput.py when only a PyTorch image is at hand (no Triton
# container): unpacks the bundled tritonserver (from the nvidia-pytriton wheel, packed as
# .gpu/triton.tar.xz), and makes a Python environment for Triton's python-backend stub with
# numpy 1.26 (the stub corrupts BYTES inputs under numpy 2) on top of the host's PyTorch.
#   bash bench/gpu/device_setup.sh   (wheels in .gpu/: numpy 1.26.4, python-rapidjson, tritonclient)
set -euo pipefail
root=/tmp/neurolabel-gpu
mkdir -p "$root/site"
tar -xJf .gpu/triton.tar.xz -C "$root/site"
python3 -m venv --without-pip "$root/venv"
venv_site=$("$root/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
host_site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m pip install -q --no-index --no-deps --no-compile --target "$venv_site" .gpu/*.whl
# After the venv's own packages: the host's torch, tokenizers, safetensors; the unpacked pytriton.
printf '%s\n%s\n' "$host_site" "$root/site" > "$venv_site/zz_host.pth"
"$root/venv/bin/python" -c "import numpy, torch, tokenizers, safetensors, tritonclient.grpc; print('numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
libpython=$(find / -xdev -name 'libpython3.12.so.1.0' 2>/dev/null | head -1 || true)
echo "libpython: ${libpython:-not found}"
if [ -n "$libpython" ]; then dirname "$libpython" > "$root/libpython_dir"; fi
LD_LIBRARY_PATH="$(cat "$root/libpython_dir" 2>/dev/null || true):$root/site/nvidia_pytriton.libs" \
    ldd "$root/site/pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub" | grep "not found" || echo "stub: all libraries found"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
