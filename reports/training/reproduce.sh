#!/bin/bash
# Regenerates reports/training from scratch on one CPU (about 15 minutes of training and 5 of
# benchmarking per run on a quiet 2-core machine; much longer when the machine is shared).
# SDPO and MOPD run side by side so that both see the same machine load.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1   # one thread per process: two processes on two cores, no oversubscription
for algo in sdpo mopd; do
  .venv/bin/mopd-eval train --algo $algo --config configs/${algo}_arith.yaml output_dir=out/train/${algo}-arith &
done
wait
for model in smollm2-135m out/train/sdpo-arith/checkpoint-3 out/train/mopd-arith/checkpoint-3; do
  name=$(basename "$(dirname "$model")" | sed 's/-arith//'); [ "$model" = smollm2-135m ] && name=base
  .venv/bin/mopd-eval bench --task arith --data reports/training/heldout_arith_L12_seed1000.jsonl \
      --model "$model" -n 8 --max-tokens 32 --seed 1000 --out out/train/bench/$name &
done
wait
for a in sdpo mopd; do
  mkdir -p reports/training/runs/$a
  cp out/train/$a-arith/{metrics.jsonl,rollouts.jsonl,train_config.json} reports/training/runs/$a/
done
for a in base sdpo mopd; do
  mkdir -p reports/training/bench/$a
  cp out/train/bench/$a/{results.json,table.md,bench_config.json,samples.jsonl} reports/training/bench/$a/
done
.venv/bin/mopd-eval train-report reports/training/runs/sdpo reports/training/runs/mopd \
    --names SDPO,MOPD --skip-steps 0 --out reports/training
