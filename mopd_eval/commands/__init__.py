
import argparse
import importlib
from collections.abc import Callable


def delegate(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """``add_arguments`` and ``run`` that import ``module`` (a lower layer) only when called.

    Commands are the top layer and the only one that may reach ``analysis``, ``training`` and
    ``sandbox``; importing them lazily keeps ``mopd-eval contexts`` free of torch and keeps the
    core's imports pointing down (docs/architecture.md).
    """

    def add_arguments(p: argparse.ArgumentParser) -> None:
        importlib.import_module(module).add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    return add_arguments, run
