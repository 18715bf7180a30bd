#!/usr/bin/env bash
# Build the consumers' own environments: one virtual environment per trainer or harness whose code
# checks mmat's output (ms-swift, LLaMA-Factory, lmms-eval). They cannot share mmat's test venv:
# their pins disagree with each other (transformers, datasets, pydantic) and LLaMA-Factory and
# lmms-eval ask for torchvision, whose wheels here are CUDA builds that need another torch.
#
# Usage: scripts/consumer_envs.sh [swift] [llamafactory] [lmms]   (default: all three)
# Each lands in .consumers/<name>/ (git-ignored); tests find it through tests/consumers.py.
# The torch family is installed as the CPU torch==2.13.0 and the packages that would pull a CUDA
# torchvision/torchaudio are installed without them (--no-deps, then their other requirements).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/.consumers"
mkdir -p "$ROOT"
PY="${PYTHON:-python3}"

# Requirements of an installed distribution, less the torch family, as pip arguments.
deps_without_torch() {
  "$1/bin/python" - "$2" <<'PYEOF'
import re, sys
from importlib.metadata import requires
skip = {"torch", "torchvision", "torchaudio", "triton"}
for req in requires(sys.argv[1]) or []:
    if ";" in req and "extra ==" in req.split(";", 1)[1]:
        continue
    name = re.split(r"[<>=!~ ;\[]", req, 1)[0].strip().lower()
    if name not in skip:
        print(req.split(";", 1)[0].strip() if ";" not in req else req)
PYEOF
}

make_env() {  # make_env NAME PACKAGE [--no-deps] [EXTRA_REQUIREMENT...]
  local name="$1" pkg="$2" nodeps="${3:-}" env="$ROOT/$1"
  local extras=("${@:4}")
  if [ -x "$env/bin/python" ] && [ -f "$env/.ready" ]; then echo "consumer env $name: ready"; return; fi
  rm -rf "$env"
  "$PY" -m venv "$env"
  "$env/bin/pip" install -q torch==2.13.0
  if [ "$nodeps" = "--no-deps" ]; then
    "$env/bin/pip" install -q --no-deps "$pkg"
    local dist="${pkg%%[<>=]*}"
    mapfile -t reqs < <(deps_without_torch "$env" "$dist")
    [ "${#reqs[@]}" -gt 0 ] && "$env/bin/pip" install -q "${reqs[@]}"
  else
    "$env/bin/pip" install -q "$pkg"
  fi
  [ "${#extras[@]}" -gt 0 ] && "$env/bin/pip" install -q "${extras[@]}"
  touch "$env/.ready"
  echo "consumer env $name: built"
}

# LLaMA-Factory imports torchaudio at the top of data/mm_plugin.py and calls it only for audio;
# its wheels here need another torch. A stub that fails when used lets the data code import.
llamafactory_stubs() {
  local site
  site="$("$ROOT/llamafactory/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if ! "$ROOT/llamafactory/bin/python" -c 'import torchaudio' 2>/dev/null; then
    mkdir -p "$site/torchaudio"
    cat > "$site/torchaudio/__init__.py" <<'PYEOF'
"""Stub written by mmat's scripts/consumer_envs.sh: LLaMA-Factory imports torchaudio for audio only."""
def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: this is mmat's stub (no audio in the consumer checks)")
PYEOF
  fi
}

targets=("$@")
[ "${#targets[@]}" -eq 0 ] && targets=(swift llamafactory lmms)
for t in "${targets[@]}"; do
  case "$t" in
    swift) make_env swift "ms-swift==4.6.0" ;;
    llamafactory) make_env llamafactory "llamafactory==0.9.5" --no-deps; llamafactory_stubs ;;
    # lmms-eval 0.7.3 imports filelock._api (gone in filelock 4) and MathVista's scorer imports
    # Levenshtein (its optional "metrics" extra, whose other members the paper's tasks do not use).
    lmms) make_env lmms "lmms-eval==0.7.3" --no-deps "filelock<4" "Levenshtein" ;;
    *) echo "unknown consumer env: $t (allowed: swift, llamafactory, lmms)" >&2; exit 2 ;;
  esac
done
