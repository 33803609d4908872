#!/usr/bin/env bash
# Runs the whole test suite. Installs the test oracle (onnxruntime, onnx, numpy; onnx-ir
# for onnxruntime's weight quantizer) and NVIDIA's runtime CUDA compiler library (NVRTC,
# so the generated CUDA source is compiled by the tests even without a GPU) into .venv on
# first use, then runs every workspace test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
nvrtc_lib() { ls -d "$PWD"/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null | head -n 1; }
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnxruntime, onnx, numpy, onnx_ir" 2>/dev/null || [ -z "$(nvrtc_lib)" ]; then
  echo "installing the test oracle into .venv (onnxruntime, onnx, numpy, onnx-ir, NVRTC)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/oracle/requirements.txt
fi
export CC_PYTHON="$PWD/.venv/bin/python"
export LD_LIBRARY_PATH="$(nvrtc_lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --release --workspace "$@"
