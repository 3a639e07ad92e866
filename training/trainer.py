"""The training loop: sample, verify, build teacher contexts, update, push weights, log, save.

``train(cfg)`` runs a whole job; under ``torchrun`` every process runs it and FSDP2 shards the
policy (and teacher) across them. One step (``Trainer.step``), with verl's timer names:

1. ``gen``: this rank's prompts (``num_prompts_per_step / world_size``), ``num_generations``
   rollouts each, from the generation engine (``hf`` on CPU; ``vllm`` on GPU).
2. ``reward``: the task's verifier gives reward, success and feedback.
3. ``adv``: GRPO's group-normalised advantages, or the teacher prompts of every rollout built by
   the shared peer-context builder under the algorithm's condition.
4. ``update_actor``: teacher forward on the same response ids, the loss, backward, optimizer
   step, EMA update of the teacher.
5. ``sync_weights``: the engine gets the new weights (a no-op when it wraps the policy itself).

Data order: the problems are reshuffled each epoch with ``random.Random(seed + epoch)`` and step
``s`` (1-based) takes positions ``[(s-1) P, s P)`` of that stream, so the data position follows
from the step and a resumed run sees the same prompts. Sampling seeds are a function of
``(seed, step)`` and the engine's per-row streams, so a resumed step samples the same rollouts.
"""

from __future__ import annotations

import copy
import importlib
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mopd_eval.errors import InputError
from mopd_eval.jsonl import write_json_atomic
from mopd_eval.rollout_gen import chat_prompt_ids
from mopd_eval.tasks import TASKS, get_task
from mopd_eval.tasks.base import Problem
from mopd_eval.versions import package_versions
from training.checkpoint import (
    load_trainer_state,
    resolve_resume,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from training.config import TrainConfig
from training.distributed import DistInfo, all_gather_objects, init_distributed, shard_model
from training.metrics import MetricsLog, Timers
from training.samples import (
    TrainSample,
    attach_advantages,
    attach_contexts,
    make_samples,
    stop_id_for,
)
from training.teachers import Teacher, copy_teacher, load_external_teacher
from training.update import UpdateContext, actor_update
from training.weight_sync import push_weights


def load_task(name: str, kwargs: dict):
    """A registered task name, or ``package.module:Class`` for a task defined elsewhere."""
    if name in TASKS or ":" not in name:
        return get_task(name, **kwargs)
    module, cls = name.split(":", 1)
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot load task {name!r}: {e}", field="task") from None


def step_problems(problems: Sequence[Problem], step: int, per_step: int, seed: int) -> list[Problem]:
    """The ``per_step`` problems of 1-based ``step`` from the epoch-shuffled stream (module doc)."""
    n = len(problems)
    out, perms = [], {}
    for pos in range((step - 1) * per_step, step * per_step):
        epoch, i = divmod(pos, n)
        if epoch not in perms:
            perms[epoch] = list(range(n))
            random.Random(seed + epoch).shuffle(perms[epoch])
        out.append(problems[perms[epoch][i]])
    return out


def sampling_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training job. ``task`` overrides ``cfg.task`` with an object (tests, notebooks)."""

    def __init__(self, cfg: TrainConfig, *, task: Any = None, info: DistInfo | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

        from mopd_eval.engines import make_engine
        from mopd_eval.engines.hf import HFEngine
        from mopd_eval.models import resolve_model

        self.cfg = cfg
        self.info = info or init_distributed()
        info = self.info
        if cfg.num_prompts_per_step % info.world_size:
            raise InputError(f"num_prompts_per_step={cfg.num_prompts_per_step} is not divisible by "
                             f"{info.world_size} processes", field="num_prompts_per_step")
        self.output_dir = Path(cfg.output_dir)
        self.resume_path = resolve_resume(cfg.resume_from_checkpoint, self.output_dir)
        _seed_everything(cfg.seed + info.rank)
        self.sharded = cfg.fsdp if cfg.fsdp is not None else info.distributed
        bf16 = cfg.bf16 if cfg.bf16 is not None else info.device.type == "cuda"
        if bf16 and info.device.type == "cpu":
            raise InputError("bf16 mixed precision is for GPUs; use fp32 on CPU", field="bf16")

        base_path = resolve_model(cfg.model_name_or_path)
        policy_path = self.resume_path or base_path
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)
        if cfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        # Teachers and the generation copy are made before sharding (same layout as the policy).
        teacher: Teacher | None = None
        if cfg.teacher in ("ema", "frozen"):
            if cfg.teacher == "ema" and self.resume_path is not None:
                src = AutoModelForCausalLM.from_pretrained(self.resume_path / "teacher", dtype=torch.float32)
                teacher = Teacher(src, "ema", cfg.teacher_ema_rate)
            elif cfg.teacher == "frozen" and self.resume_path is not None:
                teacher = Teacher(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32), "frozen")
            else:
                teacher = copy_teacher(policy, cfg.teacher, cfg.teacher_ema_rate)
        elif cfg.teacher == "external":
            teacher = load_external_teacher(cfg.teacher_model_name_or_path, self.tokenizer)
        reference = None
        if cfg.algo == "grpo" and cfg.beta > 0:
            reference = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval().requires_grad_(False)
        gen_model = copy.deepcopy(policy) if (self.sharded and cfg.engine == "hf") else None

        if self.sharded:
            shard_model(policy, info, bf16=bf16)
            if teacher is not None:
                shard_model(teacher.model, info, bf16=bf16, reshard_root=True)
            if reference is not None:
                shard_model(reference, info, bf16=bf16, reshard_root=True)
        else:
            policy.to(info.device)
            if teacher is not None:
                teacher.model.to(info.device)
            if reference is not None:
                reference.to(info.device)
        policy.eval()
        self.policy, self.teacher, self.reference = policy, teacher, reference

        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        )
        self.scheduler = get_scheduler(cfg.lr_scheduler_type, self.optimizer,
                                       num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps)
        self.start_step = 0
        if self.resume_path is not None:
            state = load_trainer_state(self.resume_path)
            restore_optimizer(policy, self.optimizer, state)
            self.scheduler.load_state_dict(state["scheduler"])
            self.start_step = int(state["step"])
            restore_rng(self.resume_path, info)

        if cfg.engine == "hf":
            model = gen_model.to(info.device) if gen_model is not None else policy
            self.engine = HFEngine(model, self.tokenizer)
        else:
            self.engine = make_engine(cfg.engine, policy_path)
        push_weights(self.engine, policy)  # a no-op when the engine wraps the policy itself
        self.pad_id = self.engine.pad_id if hasattr(self.engine, "pad_id") else (self.tokenizer.pad_token_id or 0)
        self.stop_id = stop_id_for(self.tokenizer, getattr(self.engine, "stop_ids", None) or [self.tokenizer.eos_token_id])

        self.task = task if task is not None else load_task(cfg.task, dict(cfg.task_kwargs))
        self.task_name = getattr(self.task, "name", str(cfg.task))
        self.problems = self.task.load(cfg.data_path, limit=cfg.max_prompts, seed=cfg.data_seed)
        if not self.problems:
            raise InputError("the task gave no problems", field="task")
        self.condition = cfg.resolve_condition()
        self.update_ctx = UpdateContext(policy, self.optimizer, self.scheduler, teacher, reference, info,
                                        self.pad_id, self.sharded, bf16 and not self.sharded)
        self.timers = Timers()
        self.log: MetricsLog | None = None
        self.rollout_log: MetricsLog | None = None
        self.last_samples: list[TrainSample] = []

    # ------------------------------------------------------------------ one step

    def local_problems(self, step: int) -> list[Problem]:
        cfg, info = self.cfg, self.info
        global_ = step_problems(self.problems, step, cfg.num_prompts_per_step, cfg.seed)
        per_rank = cfg.num_prompts_per_step // info.world_size
        return global_[info.rank * per_rank:(info.rank + 1) * per_rank]

    def collect(self, step: int) -> list[TrainSample]:
        """Phases gen, reward and adv: this rank's samples, verified, with contexts/advantages."""
        cfg, t = self.cfg, self.timers
        problems = self.local_problems(step)
        messages = [self.task.messages(p) for p in problems]
        prompt_ids = [chat_prompt_ids(self.tokenizer, m) for m in messages]
        with t("gen"):
            generated = self.engine.generate(prompt_ids, cfg.num_generations, cfg.temperature, cfg.top_p,
                                             cfg.max_completion_length, sampling_seed(cfg.seed, step))
        with t("reward"):
            flat_p = [p for p, g in zip(problems, generated, strict=True) for _ in g]
            verdicts = self.task.verify(flat_p, [s.text for g in generated for s in g])
        with t("adv"):
            samples = make_samples(problems, messages, prompt_ids, generated, verdicts,
                                   task_name=self.task_name, stop_id=self.stop_id, step=step)
            if cfg.algo == "grpo":
                attach_advantages(samples, scale=cfg.scale_rewards)
            else:
                attach_contexts(samples, self.condition, self.tokenizer, order=cfg.peer_order, seed=cfg.seed)
        return samples

    def step(self, step: int) -> dict:
        """Run step ``step`` (1-based) and return its metrics (global over ranks)."""
        t = self.timers
        t0 = time.perf_counter()
        samples = self.collect(step)
        self.last_samples = samples
        with t("update_actor"):
            metrics = actor_update(self.update_ctx, samples, self.cfg, t)
        with t("sync_weights"):
            push_weights(self.engine, self.policy)
        timing = t.pop()
        timing["timing_s/step"] = time.perf_counter() - t0
        return {**self._sample_metrics(samples), **metrics, **timing}

    def _log_rollouts(self, step: int) -> None:
        rows = [{"step": step, **s.rollout.to_json(), "has_teacher_context": s.has_context,
                 "advantage": s.advantage} for s in self.last_samples]
        for r in rows:
            r["meta"] = {k: v for k, v in r["meta"].items() if k != "response_token_ids"}
        gathered = all_gather_objects(rows, self.info)
        if self.rollout_log is not None:
            self.rollout_log.write_rows([r for part in gathered for r in part])

    def _sample_metrics(self, samples: Sequence[TrainSample]) -> dict:
        cfg = self.cfg
        local = [(s.group, s.rollout.reward, s.rollout.success, len(s.response_ids), s.has_context,
                  s.rollout.meta["finish_reason"] == "length", s.advantage,
                  len(s.teacher_prompt_ids or ()), len(s.prompt_ids)) for s in samples]
        rows = [r for part in all_gather_objects(local, self.info) for r in part]
        rewards = np.array([r[1] for r in rows], dtype=float)
        success = np.array([r[2] for r in rows], dtype=float)
        lengths = np.array([r[3] for r in rows], dtype=float)
        groups = np.array(rewards).reshape(-1, cfg.num_generations) if rows else np.zeros((0, 1))
        succ_g = success.reshape(-1, cfg.num_generations) if rows else np.zeros((0, 1))
        out = {
            "critic/score/mean": float(rewards.mean()),
            "critic/score/max": float(rewards.max()),
            "critic/score/min": float(rewards.min()),
            "critic/rewards/mean": float(rewards.mean()),
            "success/mean": float(success.mean()),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/min": float(lengths.min()),
            "response_length/clip_ratio": float(np.mean([r[5] for r in rows])),
            "rollouts/mixed_group_fraction": float(np.mean((succ_g.min(1) < 1) & (succ_g.max(1) > 0))),
            "rollouts/group_reward_std": float(groups.std(1, ddof=1).mean()) if cfg.num_generations > 1 else 0.0,
            "teacher/context_fraction": float(np.mean([r[4] for r in rows])) if cfg.algo != "grpo" else 0.0,
            "prompt_length/mean": float(np.mean([r[8] for r in rows])),
        }
        if cfg.algo != "grpo":
            ctx_lens = [r[7] for r in rows if r[4]]
            # Teacher prompt tokens per trained sample: what makes a peer context cost time.
            out["teacher/prompt_length/mean"] = float(np.mean(ctx_lens)) if ctx_lens else 0.0
        if cfg.algo == "grpo":
            out["critic/advantages/mean"] = float(np.mean([r[6] for r in rows]))
            out["critic/advantages/max"] = float(np.max([r[6] for r in rows]))
        return out

    # ------------------------------------------------------------------ the loop

    def save(self, step: int) -> Path:
        return save_checkpoint(
            self.output_dir, step, policy=self.policy, optimizer=self.optimizer, scheduler=self.scheduler,
            tokenizer=self.tokenizer, info=self.info,
            state={"step": step, "data_position": step * self.cfg.num_prompts_per_step, "algo": self.cfg.algo},
            config=self.cfg.to_dict(),
            teacher=self.teacher.model if (self.teacher is not None and self.teacher.kind == "ema") else None,
            save_total_limit=self.cfg.save_total_limit,
        )

    def train(self, *, stop_after: int | None = None) -> Path | None:
        """Run from the start (or the resumed step) to ``max_steps``; returns the last checkpoint.

        ``stop_after`` ends the loop after that step without a final save, as a kill would (for
        tests of resuming).
        """
        cfg, info = self.cfg, self.info
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            write_json_atomic(self.output_dir / "train_config.json",
                              {**cfg.to_dict(), "world_size": info.world_size, "fsdp": self.sharded,
                               "versions": package_versions()})
            resume_step = self.start_step if self.resume_path else None
            self.log = MetricsLog(self.output_dir, resume_step=resume_step, tensorboard=cfg.report_to)
            # Every rollout of the run with its verdict and whether the teacher had a context.
            self.rollout_log = MetricsLog(self.output_dir, resume_step=resume_step, tensorboard="none",
                                          name="rollouts.jsonl")
        last: Path | None = None
        bar = tqdm(total=cfg.max_steps, initial=self.start_step, desc=f"train {cfg.algo}", unit="step",
                   disable=not info.is_main)
        try:
            for step in range(self.start_step + 1, cfg.max_steps + 1):
                metrics = self.step(step)
                if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps:
                    t0 = time.perf_counter()
                    last = self.save(step)
                    metrics["timing_s/save_checkpoint"] = time.perf_counter() - t0
                metrics["data/position"] = step * cfg.num_prompts_per_step
                self._log_rollouts(step)
                if self.log is not None:
                    self.log.write(step, metrics)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['critic/rewards/mean']:.3f}",
                                loss=f"{metrics['actor/loss']:.4g}" if math.isfinite(metrics["actor/loss"]) else "-")
                if stop_after is not None and step >= stop_after:
                    return last
        finally:
            bar.close()
            for log in (self.log, self.rollout_log):
                if log is not None:
                    log.close()
            close = getattr(self.task, "close", None)
            if close is not None:
                close()
        return last


def train(cfg: TrainConfig, *, task: Any = None, stop_after: int | None = None) -> Path | None:
    """Run a training job (every process under ``torchrun`` calls this)."""
    return Trainer(cfg, task=task).train(stop_after=stop_after)
