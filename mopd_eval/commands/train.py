"""``mopd-eval train``: GRPO, OPD, SDPO or MOPD from a YAML config plus ``key=value`` overrides.

The same command runs on one process and under ``torchrun --nproc_per_node N`` (FSDP2 over the
processes: gloo on CPU, NCCL on GPUs); see docs/training.md. ``training`` is imported only when
this command runs (the CLI layer imports downward, lazily).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.algorithms import ALGORITHMS

    p.add_argument("--algo", choices=list(ALGORITHMS),
                   help="algorithm (overrides the config's 'algo'): "
                        + "; ".join(f"{a.name}: {a.help}" for a in ALGORITHMS.values()))
    p.add_argument("--config", help="YAML file of TrainConfig fields (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, values parsed as YAML (e.g. max_steps=4 task_kwargs.per_level=5)")


def run(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.trainer import train

    cfg = load_config(args.config, args.overrides, algo=args.algo)
    last = train(cfg)
    if last is not None:
        print(f"final checkpoint: {last}")
    return 0
