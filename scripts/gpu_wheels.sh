#!/usr/bin/env bash
# Wheels for a GPU machine without a package index that already has torch 2.11, transformers, accelerate,
# peft, timm, torchvision, pandas and pyarrow installed.
#
#   scripts/gpu_wheels.sh download   # here, with PyPI: fills .gpu-wheels/ (git-ignored)
#   scripts/gpu_wheels.sh install    # there, after copying the repository with .gpu-wheels/: no index used
#
# The download asks for wheels of the GPU machine's platform and Python (GPU_PYTHON, default 3.11;
# GPU_PLATFORM, default manylinux2014_x86_64), so it works from any machine. deepspeed ships only as an
# sdist: it is downloaded as such and built there at install time (it needs a CUDA toolkit and ninja there
# for its ops; set DS_BUILD_OPS=0 to build them lazily at first use instead).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
# What hubtune needs beyond the machine's stack (scikit-learn for seqeval and hubtune's metrics, scipy for
# resampling, matplotlib for reports), deepspeed's runtime dependencies, and setuptools/wheel to build sdists.
BINARIES=(datasets evaluate jiwer soundfile scikit-learn scipy matplotlib Pillow
  hjson ninja py-cpuinfo pydantic msgpack einops psutil nvidia-ml-py setuptools wheel)
PYTHON=${PYTHON:-python}

case "${1:-}" in
  download)
    mkdir -p "$WHEELS"
    # Binary wheels for the target, with their dependencies; those the machine already has are skipped there.
    "$PYTHON" -m pip download --dest "$WHEELS" --only-binary=:all: \
      --python-version "${GPU_PYTHON:-3.11}" --platform "${GPU_PLATFORM:-manylinux2014_x86_64}" \
      -c constraints.txt "${BINARIES[@]}"
    # seqeval and deepspeed publish no wheels: their sdists, built on the GPU machine.
    "$PYTHON" -m pip download --dest "$WHEELS" --no-deps --no-binary=:all: seqeval deepspeed
    "$PYTHON" -m pip wheel --no-deps --wheel-dir "$WHEELS" .
    ;;
  install)
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" "${BINARIES[@]}" seqeval
    # deepspeed's build imports the installed torch, so it builds without isolation.
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation deepspeed
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-deps hubtune
    ;;
  *)
    echo "usage: $0 download|install" >&2
    exit 2
    ;;
esac
