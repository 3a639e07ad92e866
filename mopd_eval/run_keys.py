"""The pieces of a run's content key (``resumable.ResumableRun``): data, model and engine identity.

A key holds what determines the results, by content where it can: a data file by its sha256 (a
file edited in place changes the key even though its name did not), a model directory by the
hash of its config and tokenizer files, a hub model by repo id, revision and resolved commit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mopd_eval.resumable import file_sha256


def data_identity(spec: str | os.PathLike[str] | None) -> Any:
    """``--data`` by content: ``[[source, sha256], ...]`` in reading order, for exactly the sources
    the tasks read (``tasks.data_files.resolve_data``); a hub dataset (``hf:...``) by its spec;
    ``None`` for a task's built-in source."""
    if spec is None:
        return None
    from mopd_eval.tasks.data_files import HF_PREFIX, resolve_data

    return [[s, s if s.startswith(HF_PREFIX) else file_sha256(s)] for s in resolve_data(os.fspath(spec))]


def model_key(model: str | os.PathLike[str], engine_options: Mapping[str, Any] | None = None) -> dict:
    """Model identity (``models.model_identity``) plus the engine options that change numbers."""
    from mopd_eval.models import model_identity

    return {"model": model_identity(model), "engine": dict(engine_options or {})}
