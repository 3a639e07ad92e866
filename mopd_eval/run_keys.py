"""The pieces of a run's content key (``resumable.ResumableRun``): data, model and engine identity.

A key holds what determines the results, by content where it can: a data file by its sha256 (a
file edited in place changes the key even though its name did not), a model directory by the
hash of its config and tokenizer files, a hub model by repo id, revision and resolved commit.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mopd_eval.resumable import file_sha256


def data_identity(spec: str | os.PathLike[str] | None) -> Any:
    """``--data`` by content: ``{path: sha256}`` of every local file it names (comma-separated
    paths and globs), the spec itself for a hub dataset, ``None`` for a task's built-in source."""
    if spec is None:
        return None
    text = os.fspath(spec)
    if text.startswith("hf:"):
        return text
    files: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        matches = sorted(glob.glob(part, recursive=True)) if glob.has_magic(part) else [part]
        for m in matches:
            path = Path(m)
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    files[str(f)] = file_sha256(f)
    return files or text


def model_key(model: str | os.PathLike[str], engine_options: Mapping[str, Any] | None = None) -> dict:
    """Model identity (``models.model_identity``) plus the engine options that change numbers."""
    from mopd_eval.models import model_identity

    return {"model": model_identity(model), "engine": dict(engine_options or {})}
