#!/bin/sh
# GPU check of mmat's hf-lora trainer: a few bf16 LoRA steps on a tiny and a ~0.5B random VLM,
# printing tokens/s and peak GPU memory. Needs only torch, transformers and peft; without CUDA it
# says so and runs the tiny model on the CPU. Usage: sh bench/gpu_check.sh [--quick] [--steps N]
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
# No hub access is needed (models are built from a config); keep transformers from trying.
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false exec "$PYTHON" bench/gpu_check.py "$@"
