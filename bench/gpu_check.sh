#!/usr/bin/env bash
# GPU check of the SD-2.1-size engines (bench/gpu_check.py): TensorRT build from the ONNX graph
# with external data, parity vs torch, seconds per tile at batch 1/8/32, a few DDP training steps.
# Writes bench/gpu_results.json after each section. Needs one CUDA GPU and the gpu extra
# (pip install -e '.[gpu]'); stopped after 8 minutes. On a CPU host: bench/gpu_check.sh --dry-run
# runs the same code with the small base and onnxruntime, and records ran_on_gpu: false.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_LIMIT_S:-480}" "$PY" bench/gpu_check.py "$@"
