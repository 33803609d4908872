#!/usr/bin/env bash
# Runs the whole test suite. Installs the test oracle (onnxruntime, onnx, numpy; onnx-ir
# for onnxruntime's weight quantizer) into .venv on first use, then runs every workspace
# test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnxruntime, onnx, numpy, onnx_ir" 2>/dev/null; then
  echo "installing the test oracle into .venv (onnxruntime, onnx, numpy, onnx-ir)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/oracle/requirements.txt
fi
export CC_PYTHON="$PWD/.venv/bin/python"
cargo test --release --workspace "$@"
