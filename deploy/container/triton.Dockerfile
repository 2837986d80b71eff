# NVIDIA's Triton GPU container plus what the neurolabel_report python-backend model imports
# (daemon.inference.runtime: numpy<2, tokenizers, onnxruntime-gpu). Build from the repository root:
#   docker build -f deploy/container/triton.Dockerfile -t neurolabel-triton:24.12 .
# Triton 24.12 (server 2.53): Ubuntu 24.04 with Python 3.12, CUDA 12.6, cuDNN 9; NVIDIA driver 560 or a
# data-centre branch (470.57+, 525.85+, 535.86+, 545.23+). The model repository is mounted at /models,
# not baked in, so a new model version needs no new image.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-py3
FROM ${TRITON_IMAGE}
COPY pyproject.toml README.md /tmp/neurolabel/
COPY daemon /tmp/neurolabel/daemon
# numpy 1.26: the python backend stub crashes on string inputs with numpy 2.
RUN python3 -m pip install --no-cache-dir --break-system-packages \
        numpy==1.26.4 tokenizers==0.23.3 onnxruntime-gpu==1.31.1 \
 && python3 -m pip install --no-cache-dir --break-system-packages --no-deps /tmp/neurolabel \
 && rm -rf /tmp/neurolabel
