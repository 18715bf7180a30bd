#!/bin/sh
# GPU check of mmat's hf-lora trainer: a few bf16 LoRA steps on a tiny and a ~0.5B random VLM,
# printing tokens/s and peak GPU memory; then an eval step (the paper's suite through lmms-eval on
# the local fixtures, see below). Needs only torch, transformers and peft; without CUDA it
# says so and runs the tiny model on the CPU. Usage: sh bench/gpu_check.sh [--quick] [--steps N]
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
# No hub access is needed (models are built from a config); keep transformers from trying.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" bench/gpu_check.py "$@"

# Eval step: `mmat eval --suite paper` in all three modes on the local fixtures (2 rows per
# benchmark), the tiny random model served by `mmat serve` on the GPU, lmms-eval in the environment
# of MMAT_LMMS_PYTHON (default: this python, if it has lmms-eval). It checks that the served model
# runs on CUDA behind lmms-eval, not the scores (a random model; its replies are capped at 16 new
# tokens, since some tasks allow 16384). MathVista and HallusionBench need
# a judge model: they run only when OPENAI_API_KEY is set (or MMAT_EVAL_JUDGE_URL names an
# OpenAI-compatible judge server); otherwise the other six run.
LMMS_PYTHON="${MMAT_LMMS_PYTHON:-$PYTHON}"
if ! "$LMMS_PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('lmms_eval') is None)" 2>/dev/null; then
    echo "eval step skipped: no lmms-eval for $LMMS_PYTHON (pip install 'mmat[eval]' or set MMAT_LMMS_PYTHON)"
    echo "RESULT eval_step=skipped"
    exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
DEVICE=cpu
"$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null && DEVICE=cuda
BENCHMARKS="mmstar,mmmu,mathvision,ai2d,ocrbench,realworldqa"
set --
if [ -n "${MMAT_EVAL_JUDGE_URL:-}" ]; then
    BENCHMARKS="$BENCHMARKS,mathvista,hallusionbench"
    set -- --judge openai --judge-option "base_url=$MMAT_EVAL_JUDGE_URL" --judge-option "model=${MMAT_EVAL_JUDGE_MODEL:-judge}"
elif [ -n "${OPENAI_API_KEY:-}" ]; then
    BENCHMARKS="$BENCHMARKS,mathvista,hallusionbench"
fi
"$PYTHON" -m mmat_plugins.evaluation.lmms.fixtures "$WORK/benchmarks" >/dev/null
"$PYTHON" -c "from mmat_core.cli import run; run()" tiny-model "$WORK/tiny" >/dev/null
START=$(date +%s)
if "$PYTHON" -c "from mmat_core.cli import run; run()" eval --suite paper --mode all --model "$WORK/tiny" \
        --backend transformers --device "$DEVICE" --tools ocr --max-tokens 16 --data-root "$WORK/benchmarks" \
        --limit 2 --benchmarks "$BENCHMARKS" --lmms-python "$LMMS_PYTHON" --out "$WORK/eval" \
        --lmms-arg=--gen_kwargs=max_new_tokens=16 "$@"; then
    echo "RESULT eval_step=ok eval_device=$DEVICE eval_wall_s=$(( $(date +%s) - START )) eval_benchmarks=$BENCHMARKS"
else
    echo "eval step failed; logs were in $WORK/eval (serve.log, <mode>/lmms-eval.log)"
    for log in "$WORK"/eval/serve.log "$WORK"/eval/*/lmms-eval.log; do [ -f "$log" ] && tail -n 20 "$log"; done
    echo "RESULT eval_step=failed eval_device=$DEVICE"
    exit 1
fi
