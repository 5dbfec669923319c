#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: a virtualenv in .venv with the CPU
# build of torch 2.13 first (a bare `torch` requirement would pull a multi-GB CUDA build),
# then the project in editable mode with its test, ONNX, PostgreSQL and cluster (submitit) extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[test,onnx,postgres,cluster]"
echo "set-up done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
