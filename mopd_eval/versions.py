"""Versions of the packages a result depends on, recorded next to every report."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata

PACKAGES = ("mopd-eval", "torch", "transformers", "numpy", "scipy", "scikit-learn", "pandas", "math-verify", "vllm")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{package: version}`` for the installed ones, plus ``python`` and ``machine``."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out
