"""Shared fixtures: a tiny offline tokenizer and model directory (no hub access)."""

from __future__ import annotations

import pytest
from tiny_model import make_tiny_model_dir, make_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
