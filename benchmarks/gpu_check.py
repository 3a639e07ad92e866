"""GPU acceptance run: the hf engine's scoring and sampling, and one FSDP2 step, on a random model.

Needs torch, transformers and this repository only (no network, no vLLM): the model is a
random-weight Llama of SmolLM2-1.7B's shape (``--tiny``: a 2-layer one) with the SmolLM2
tokenizer shipped in ``mopd_eval/data/tokenizer/smollm2``. Steps, each timed:

1. ``scoring``: a study-shaped workload (seeded synthetic rollouts, every study condition, 4
   problems per call, built by the study's own ``build_requests``) scored by the shared-prefix
   path and, on the first calls, one pair per forward; ratio of target tokens/s and agreement
   (max and mean |Δ log-prob|), in the run's dtype. Then one call in float32 (TF32 off), where
   the two paths must agree to 2e-3.
2. ``sampling``: ``generate`` with the run's dtype, n samples of a few chat prompts, twice, the
   second time in another batch composition: tokens/s and whether the samples are identical.
3. ``fsdp``: one training step of the model wrapped by FSDP2 (``training.distributed.shard_model``,
   bf16 compute, fp32 master weights) in a one-process group (NCCL on CUDA, gloo on CPU):
   cross-entropy loss finite, weights changed.

Prints progress to stderr and one JSON line to stdout: ``{"ok": bool, "checks": {...}, ...}``;
exit status 0 when every check passed. ``scripts/gpu_check.sh`` is the entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TOKENIZER_DIR = ROOT / "mopd_eval" / "data" / "tokenizer" / "smollm2"
# SmolLM2-1.7B-Instruct's config.json (Llama; the tokenizer's 49152 ids; tied embeddings).
SMOLLM2_1_7B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                    num_key_value_heads=32, max_position_embeddings=8192, rope_theta=130000.0, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5)


def say(msg: str) -> None:
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def build_model(tiny: bool, device: str, dtype, seed: int = 0):
    """A random-weight Llama of the chosen shape on ``device`` and the embedded tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **(TINY if tiny else SMOLLM2_1_7B))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval(), tok


def study_workload(tok, problems: int, per_problem: int = 8):
    """Score calls of a study-shaped workload: 4 problems x ``per_problem`` rollouts x the study
    conditions per call."""
    from bench_scoring import synthetic_rollouts, workload_from_rollouts

    from mopd_eval.contexts import STUDY_CONDITIONS

    rollouts = synthetic_rollouts(problems, per_problem, 0)
    per_problem = workload_from_rollouts(rollouts, tok, list(STUDY_CONDITIONS), 0)
    return [sum(per_problem[i:i + 4], []) for i in range(0, len(per_problem), 4)]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_score(engine, pairs, naive: bool, device: str):
    fn = engine.score_naive if naive else engine.score
    sync(device)
    t = time.perf_counter()
    out = fn([p for p, _ in pairs], [t_ for _, t_ in pairs])
    sync(device)
    return out, time.perf_counter() - t


def check_scoring(engine, calls, naive_calls: int, device: str) -> dict:
    import numpy as np

    engine.score_naive([calls[0][0][0]], [calls[0][0][1]])  # kernels warmed
    fast_s = naive_s = 0.0
    tokens = 0
    diffs = []
    for k, pairs in enumerate(calls):
        got, s = timed_score(engine, pairs, False, device)
        fast_s += s
        tokens += sum(len(t) for _, t in pairs) if k < naive_calls else 0
        if k < naive_calls:
            ref, s2 = timed_score(engine, pairs, True, device)
            naive_s += s2
            diffs += [np.abs(a - b) for a, b in zip(got, ref, strict=True) if a.size]
    d = np.concatenate(diffs)
    tgt_all = sum(len(t) for pairs in calls for _, t in pairs)
    fast_paired = fast_s * tokens / tgt_all  # fast time on the paired calls, pro rata
    return {"calls": len(calls), "pairs": sum(map(len, calls)), "target_tokens": tgt_all,
            "fast_s": round(fast_s, 3), "fast_tok_s": round(tgt_all / fast_s, 1),
            "naive_calls": naive_calls, "naive_s": round(naive_s, 3), "naive_tok_s": round(tokens / naive_s, 1),
            "ratio": round(naive_s / fast_paired, 2), "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


def check_fp32_agreement(model, tok, pairs, device: str) -> dict:
    """Shared-prefix vs one-pair-per-forward in float32 (TF32 off): they must agree to 2e-3."""
    import numpy as np
    import torch

    from mopd_eval.engines.hf import HFEngine

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    engine = HFEngine(model.float(), tok)
    pairs = pairs[:24]
    got, _ = timed_score(engine, pairs, False, device)
    ref, _ = timed_score(engine, pairs, True, device)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref, strict=True) if a.size)
    return {"pairs": len(pairs), "max_abs_diff": diff, "ok": diff < 2e-3}


def check_sampling(engine, tok, n: int, max_tokens: int, device: str) -> dict:
    questions = [f"What is {a} + {b}? Think step by step." for a, b in ((7, 5), (12, 30), (99, 1), (3, 4))]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    sync(device)
    t = time.perf_counter()
    first = engine.generate(prompts, n, 1.0, 0.95, max_tokens, seed=0)
    sync(device)
    secs = time.perf_counter() - t
    again = engine.generate(prompts[::-1][:2], n, 1.0, 0.95, max_tokens, seed=0)[::-1]
    same = [s.token_ids for s in sum(first[2:], [])] == [s.token_ids for s in sum(again, [])]
    new = sum(len(s.token_ids) for g in first for s in g)
    valid = all(0 <= t_ < len(tok) for g in first for s in g for t_ in s.token_ids)
    return {"prompts": len(prompts), "n": n, "new_tokens": new, "seconds": round(secs, 3),
            "tok_s": round(new / secs, 1), "batch_independent": same, "ok": valid and new > 0}


def check_fsdp_step(tiny: bool, device: str) -> dict:
    """One FSDP2 training step in bf16 compute on a one-process group."""
    import torch
    import torch.distributed as dist

    from training.distributed import DistInfo, shard_model

    backend = "nccl" if device.startswith("cuda") else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model, tok = build_model(tiny, device, torch.float32, seed=1)
        model.train()
        info = DistInfo(0, 1, 0, torch.device(device))
        shard_model(model, info, bf16=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        before = [p.detach().full_tensor().clone() for p in list(model.parameters())[:2]]
        ids = torch.randint(3, len(tok), (4, 256 if not tiny else 64), device=device,
                            generator=torch.Generator(device).manual_seed(0))
        sync(device)
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        sync(device)
        secs = time.perf_counter() - t
        loss = loss.detach()
        after = [p.detach().full_tensor() for p in list(model.parameters())[:2]]
        changed = all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        return {"backend": backend, "loss": float(loss), "seconds": round(secs, 3), "weights_changed": changed,
                "ok": bool(torch.isfinite(loss)) and changed}
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on CPU (CI); default: the first CUDA device")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model and a small workload (CI)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--problems", type=int, help="synthetic problems (default 16; --tiny 1)")
    args = ap.parse_args(argv)
    import torch
    import transformers

    if not args.cpu and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "error": "no CUDA device (use --cpu for the CPU run)"}))
        return 1
    device = "cpu" if args.cpu else "cuda:0"
    dtype = getattr(torch, args.dtype)
    problems = args.problems or (1 if args.tiny else 16)
    t0 = time.perf_counter()
    info = {"device": torch.cuda.get_device_name(0) if device != "cpu" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "dtype": args.dtype, "tiny": args.tiny}
    from mopd_eval.engines.hf import HFEngine

    model, tok = build_model(args.tiny, device, dtype)
    engine = HFEngine(model, tok)
    info["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    say(f"model {info['params_m']}M parameters on {device} in {args.dtype} ({time.perf_counter() - t0:.1f} s)")
    checks = {}
    calls = study_workload(tok, problems, per_problem=4 if args.tiny else 8)
    checks["scoring"] = check_scoring(engine, calls, naive_calls=1, device=device)
    say(f"scoring: {checks['scoring']}")
    checks["sampling"] = check_sampling(engine, tok, n=4, max_tokens=16 if args.tiny else 128, device=device)
    say(f"sampling: {checks['sampling']}")
    checks["fp32_agreement"] = check_fp32_agreement(model, tok, calls[0], device)
    say(f"fp32 agreement: {checks['fp32_agreement']}")
    del engine, model
    if device != "cpu":
        torch.cuda.empty_cache()
    checks["fsdp"] = check_fsdp_step(args.tiny, device)
    say(f"fsdp: {checks['fsdp']}")
    # In bf16 the two scoring paths round differently; a mean over many tokens well under a
    # tenth of a nat says they compute the same thing.
    checks["scoring"]["ok"] = checks["scoring"]["mean_abs_diff"] < (1e-3 if args.dtype == "float32" else 0.05)
    ok = all(c["ok"] for c in checks.values())
    print(json.dumps({"ok": ok, **info, "seconds": round(time.perf_counter() - t0, 1), "checks": checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
