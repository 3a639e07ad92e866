#!/usr/bin/env bash
# GPU acceptance run (docs/gpus.md): shared-prefix vs one-pair-per-forward scoring, bf16 sampling
# and one FSDP2 step on NCCL, on a random-weight model of SmolLM2-1.7B's shape built offline with
# the tokenizer shipped in mopd_eval/data/tokenizer/smollm2. Prints one JSON line; exit 0 = passed.
#
#   bash scripts/gpu_check.sh                  # one GPU, under 8 minutes on an H100/H200
#   bash scripts/gpu_check.sh --cpu --tiny     # a 2-layer model on CPU (CI, a few minutes)
#   bash scripts/gpu_check.sh --list-wheels    # what to carry to a machine without network
#
# Needs: python with torch and transformers (PYTHON=..., default python3), this repository. No
# network (HF_HUB_OFFLINE is set), no vLLM. GPU_CHECK_TIMEOUT (seconds, default 480) bounds it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

# Everything the check imports beyond the standard library, and the wheel that provides it.
MODULES="torch:torch transformers:transformers numpy:numpy tqdm:tqdm yaml:pyyaml tokenizers:tokenizers
safetensors:safetensors huggingface_hub:huggingface-hub filelock:filelock jinja2:jinja2"

missing=()
for pair in $MODULES; do
  mod="${pair%%:*}"
  "$PY" -c "import $mod" 2>/dev/null || missing+=("${pair#*:}")
done

if [[ "${1:-}" == "--list-wheels" ]]; then
  if ((${#missing[@]} == 0)); then
    echo "nothing to carry: $PY has every module the check imports"
  else
    echo "missing here: ${missing[*]}"
    echo "on a machine with network, fetch them (pure-python wheels, well under 60 MB):"
    echo "  pip download --no-deps -d wheels ${missing[*]}"
    echo "then here: $PY -m pip install --no-index --no-deps wheels/*.whl"
  fi
  exit 0
fi
if ((${#missing[@]} > 0)); then
  echo "gpu_check: $PY lacks: ${missing[*]} (see: bash scripts/gpu_check.sh --list-wheels)" >&2
  exit 2
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-480}" "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
