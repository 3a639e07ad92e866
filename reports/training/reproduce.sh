#!/bin/bash
# Regenerates reports/training from scratch on one CPU: the learning study (study.sh: GRPO, SDPO
# and MOPD side by side, seeds 0 and 1, 30 steps), the held-out benchmark of the base model and of
# every final checkpoint, the train-report figures and tables, and the trainer-vs-TRL bench.
# About 100 minutes for the study on a loaded 2-core machine; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=reports/training
export OMP_NUM_THREADS=1
bash $R/study.sh
bench() {  # NAME MODEL: 40 held-out problems (seed 1000, levels 1-2), 4 samples each, as in training
  .venv/bin/mopd-eval bench --task arith --model "$2" --per-level 20 --levels 1,2 -n 4 --max-tokens 48 \
      --temperature 1.0 --seed 1000 --out $R/bench/$1
}
bench base smollm2-135m
runs=()
for algo in grpo sdpo mopd; do for seed in 0 1; do
  bench $algo-s$seed $R/$algo-s$seed/checkpoint-30
  runs+=($R/$algo-s$seed)
done; done
.venv/bin/mopd-eval train-report "${runs[@]}" --names GRPO,GRPO,SDPO,SDPO,MOPD,MOPD --out $R
.venv/bin/python -m training.heldout --base base base=$R/bench/base \
    GRPO=$R/bench/grpo-s0 GRPO=$R/bench/grpo-s1 SDPO=$R/bench/sdpo-s0 SDPO=$R/bench/sdpo-s1 \
    MOPD=$R/bench/mopd-s0 MOPD=$R/bench/mopd-s1 --out $R
.venv/bin/python benchmarks/bench_trainer.py --steps 3 --out $R/bench_trainer   # needs the bench extra (trl)
