#!/bin/bash
# The learning study of reports/training/README.md: GRPO vs SDPO vs MOPD (2s1f) on the embedded
# model, arith levels 1-2, 2 prompts x 8 rollouts x <=48 new tokens, STEPS steps, seeds 0 and 1,
# bf16 autocast (fp32 master weights), one thread per process. The three algorithms of a seed run
# side by side (three lanes, one per algorithm, each running seed 0 then seed 1), so that
# algorithms compared in the time breakdown saw the same machine load.
#
# CODE: a directory holding the code to run (default: this checkout). The study was run from
# `git archive` of the commit named in the README, so that edits made while it ran did not reach it.
# A run that dies (e.g. killed) is resumed from its newest checkpoint (save_steps=10).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CODE=${CODE:-$ROOT}
STEPS=${STEPS:-40}
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${OUT:-$ROOT/reports/training}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # oversubscribed OpenMP threads were 10x slower here

run() {  # algo seed
  local algo=$1 seed=$2 dir=$OUT/$1-s$2
  for attempt in 1 2 3; do
    (cd "$CODE" && "$PY" -m mopd_eval.cli train --algo "$algo" --config "configs/${algo}_arith.yaml" \
        output_dir="$dir" seed="$seed" max_steps="$STEPS" num_prompts_per_step=2 num_generations=8 \
        max_completion_length=48 gradient_accumulation_steps=1 learning_rate=2.0e-5 warmup_steps=0 \
        lr_scheduler_type=constant bf16=true save_steps=10 save_total_limit=1 report_to=none \
        resume_from_checkpoint=true) && return 0
    echo "$(date +%T) $algo-s$seed attempt $attempt failed; resuming" >&2
  done
  return 1
}

lane() {  # algo
  for seed in 0 1; do
    echo "$(date +%T) start $1-s$seed"
    run "$1" "$seed" > "$OUT/logs/$1-s$seed.log" 2>&1
    echo "$(date +%T) done $1-s$seed rc=$?"
  done
}

mkdir -p "$OUT/logs"
for algo in grpo sdpo mopd; do lane "$algo" & done
wait
echo "$(date +%T) study finished"
