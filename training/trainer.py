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

import contextlib
import copy
import importlib
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl, write_json_atomic
from mopd_eval.pipeline import SamplingConfig, sample_and_verify
from mopd_eval.resumable import RunLock
from mopd_eval.tasks import TASKS, get_task
from mopd_eval.tasks.base import Problem
from mopd_eval.versions import package_versions
from training.checkpoint import (
    hf_trainer_state,
    load_trainer_state,
    resolve_resume,
    restore_master_weights,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from training.config import TrainConfig
from training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    init_distributed,
    shard_model,
)
from training.losses import batch_reward_std
from training.metrics import (
    MetricsLog,
    SampleStats,
    Timers,
    context_summary,
    no_context_message,
    step_sample_metrics,
)
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


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def sampling_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Models:
    """What ``Trainer`` trains and reads: the policy, its teacher and GRPO's KL reference."""

    policy: torch.nn.Module
    teacher: Teacher | None
    reference: torch.nn.Module | None
    gen_model: torch.nn.Module | None  # an unsharded copy for HF generation under FSDP


class Trainer:
    """One training job. ``task`` overrides ``cfg.task`` with an object (tests, notebooks).

    Construction runs the setup steps in order: distributed, models, teacher, optimizer, resume,
    engine, data; each is one method below.
    """

    def __init__(self, cfg: TrainConfig, *, task: Any = None, info: DistInfo | None = None) -> None:
        self.cfg, self.spec = cfg, cfg.spec
        self.info = self._setup_distributed(info)
        self.output_dir = Path(cfg.output_dir)
        # One writer per output_dir, taken before minutes of model loading (released by train()).
        self._lock = RunLock(self.output_dir / ".mopd-eval.lock", what="training run", flag="output_dir")
        if self.info.is_main:
            self._lock.acquire()
        try:
            self._setup(task)
        except BaseException:
            self._lock.release()
            raise
        self.update_ctx = UpdateContext(self.policy, self.optimizer, self.scheduler, self.teacher, self.reference,
                                        self.info, self.pad_id, self.sharded, self.bf16 and not self.sharded)
        self.timers = Timers()
        self.log: MetricsLog | None = None
        self.rollout_log: MetricsLog | None = None
        self.last_samples: list[TrainSample] = []

    # ------------------------------------------------------------------ setup steps

    def _setup(self, task: Any) -> None:
        cfg = self.cfg
        self.resume_path = resolve_resume(cfg.resume_from_checkpoint, self.output_dir)
        self.bf16 = self._precision()
        self.models = self._setup_models()
        self.policy, self.teacher, self.reference = self.models.policy, self.models.teacher, self.models.reference
        self.optimizer, self.scheduler = self._setup_optimizer()
        self.start_step = self._resume()
        self.engine = self._setup_engine()
        self.task, self.problems = self._setup_data(task)
        self.condition = cfg.resolve_condition()

    def _setup_distributed(self, info: DistInfo | None) -> DistInfo:
        info = info or init_distributed()
        if self.cfg.num_prompts_per_step % info.world_size:
            raise InputError(f"num_prompts_per_step={self.cfg.num_prompts_per_step} is not divisible by "
                             f"{info.world_size} processes", field="num_prompts_per_step")
        _seed_everything(self.cfg.seed + info.rank)
        self.sharded = self.cfg.fsdp if self.cfg.fsdp is not None else info.distributed
        return info

    def _precision(self) -> bool:
        cfg = self.cfg
        bf16 = cfg.bf16 if cfg.bf16 is not None else self.info.device.type == "cuda"
        if bf16 and self.info.device.type == "cpu" and not cpu_supports_bf16():
            # Without native bf16 instructions oneDNN emulates it, which is slower than fp32.
            raise InputError("bf16 on CPU needs AVX512-BF16 or AMX (not found on this CPU); use bf16=false",
                             field="bf16")
        return bf16

    def _setup_models(self) -> Models:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mopd_eval.models import resolve_model

        cfg = self.cfg
        self.base_path = resolve_model(cfg.model_name_or_path)
        self.policy_path = self.resume_path or self.base_path
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        policy = AutoModelForCausalLM.from_pretrained(self.policy_path, dtype=torch.float32)
        if cfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Teachers and the generation copy are made before sharding (same layout as the policy).
        teacher = self._make_teacher(policy)
        reference = None
        if self.spec.loss == "policy_gradient" and cfg.beta > 0:
            reference = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=torch.float32)
            reference.eval().requires_grad_(False)
        gen_model = copy.deepcopy(policy) if (self.sharded and cfg.engine == "hf") else None
        for i, model in enumerate((policy, teacher.model if teacher else None, reference)):
            if model is None:
                continue
            if self.sharded:
                # The policy's root stays gathered after forward; an EMA teacher's root must reshard.
                shard_model(model, self.info, bf16=self.bf16, reshard_root=i > 0)
            else:
                model.to(self.info.device)
        policy.eval()
        return Models(policy, teacher, reference, gen_model)

    def _make_teacher(self, policy: torch.nn.Module) -> Teacher | None:
        from transformers import AutoModelForCausalLM

        cfg = self.cfg
        if cfg.teacher == "ema" and self.resume_path is not None:
            src = AutoModelForCausalLM.from_pretrained(self.resume_path / "teacher", dtype=torch.float32)
            return Teacher(src, "ema", cfg.teacher_ema_rate)
        if cfg.teacher == "frozen" and self.resume_path is not None:
            return Teacher(AutoModelForCausalLM.from_pretrained(self.base_path, dtype=torch.float32), "frozen")
        if cfg.teacher in ("ema", "frozen"):
            return copy_teacher(policy, cfg.teacher, cfg.teacher_ema_rate)
        if cfg.teacher == "external":
            return load_external_teacher(cfg.teacher_model_name_or_path, self.tokenizer)
        return None

    def _setup_optimizer(self):
        from transformers import get_scheduler

        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        )
        scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer,
                                  num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps)
        return optimizer, scheduler

    def _resume(self) -> int:
        if self.resume_path is None:
            return 0
        state = load_trainer_state(self.resume_path)
        restore_optimizer(self.policy, self.optimizer, state, self.resume_path)
        models = {"model": self.policy}
        if self.teacher is not None and self.teacher.kind == "ema":
            models["teacher"] = self.teacher.model
        restore_master_weights(models, state, self.resume_path)
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(self.resume_path, self.info)
        return int(state["step"])

    def _setup_engine(self):
        from mopd_eval.engines.hf import HFEngine

        cfg, options = self.cfg, self.cfg.engine_options()
        if cfg.engine == "hf":
            gen = self.models.gen_model
            engine = HFEngine(gen.to(self.info.device) if gen is not None else self.policy, self.tokenizer,
                              max_model_len=options.max_model_len)
            push_weights(engine, self.policy)  # a no-op when the engine wraps the policy itself
        else:
            from training.vllm_colocate import ColocatedVLLM

            # Loads the same files the policy was loaded from: no initial push needed.
            engine = ColocatedVLLM(
                self.policy_path, self.info, tensor_parallel_size=options.tensor_parallel_size,
                gpu_memory_utilization=options.gpu_memory_utilization,
                enable_sleep_mode=cfg.vllm_enable_sleep_mode, dtype="bfloat16" if self.bf16 else options.dtype,
                max_model_len=options.max_model_len, enforce_eager=options.enforce_eager,
                engine_args=options.engine_args)
        self.pad_id = engine.pad_id if hasattr(engine, "pad_id") else (self.tokenizer.pad_token_id or 0)
        stops = getattr(engine, "stop_ids", None) or [self.tokenizer.eos_token_id]
        self.stop_id = stop_id_for(self.tokenizer, stops)
        return engine

    def _setup_data(self, task: Any) -> tuple[Any, list[Problem]]:
        cfg = self.cfg
        task = task if task is not None else load_task(cfg.task, dict(cfg.task_kwargs))
        self.task_name = getattr(task, "name", str(cfg.task))
        problems = task.load(cfg.data_path, limit=cfg.max_prompts, seed=cfg.data_seed)
        if not problems:
            raise InputError("the task gave no problems", field="task")
        return task, problems

    # ------------------------------------------------------------------ one step

    def local_problems(self, step: int) -> list[Problem]:
        cfg, info = self.cfg, self.info
        global_ = step_problems(self.problems, step, cfg.num_prompts_per_step, cfg.seed)
        per_rank = cfg.num_prompts_per_step // info.world_size
        return global_[info.rank * per_rank:(info.rank + 1) * per_rank]

    def collect(self, step: int) -> list[TrainSample]:
        """Phases gen, reward and adv: this rank's samples, verified, with contexts/advantages."""
        cfg, t = self.cfg, self.timers
        sampling = SamplingConfig(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_tokens=cfg.max_completion_length, seed=sampling_seed(cfg.seed, step))
        with self._gen_autocast():
            records = sample_and_verify(self.engine, self.task, self.local_problems(step), sampling,
                                        progress=False, timer=t)
        sleep = getattr(self.engine, "sleep", None)
        if sleep is not None:  # a colocated vLLM frees its GPU memory for the update
            with t("sync_weights"):
                sleep()
        with t("adv"):
            samples = make_samples(records, task_name=self.task_name, stop_id=self.stop_id, step=step)
            if self.spec.uses_teacher:
                attach_contexts(samples, self.condition, self.tokenizer, order=cfg.peer_order, seed=cfg.seed)
            else:
                attach_advantages(samples, scale=cfg.scale_rewards, batch_std=self._batch_reward_std(samples))
        return samples

    def _batch_reward_std(self, samples: Sequence[TrainSample]) -> float | None:
        """The std of every rank's rewards this step (``scale_rewards=batch``; None otherwise)."""
        if self.cfg.scale_rewards != "batch":
            return None
        r = [s.rollout.reward for s in samples]
        return batch_reward_std(*all_reduce_sum([sum(r), sum(x * x for x in r), len(r)], self.info))

    def _gen_autocast(self):
        # bf16 on one process: the hf engine samples from the fp32 master weights themselves, so
        # generation runs under the same autocast as the update (sharded bf16 is FSDP's policy).
        if self.bf16 and not self.sharded and self.cfg.engine == "hf":
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        local = [SampleStats.of(s) for s in samples]
        rows = [r for part in all_gather_objects(local, self.info) for r in part]
        return step_sample_metrics(rows, self.cfg.num_generations, distill=self.spec.uses_teacher)

    # ------------------------------------------------------------------ the loop

    def save(self, step: int) -> Path:
        return save_checkpoint(
            self.output_dir, step, policy=self.policy, optimizer=self.optimizer, scheduler=self.scheduler,
            tokenizer=self.tokenizer, info=self.info,
            state={"step": step, "data_position": step * self.cfg.num_prompts_per_step, "algo": self.cfg.algo},
            config=self.cfg.to_dict(),
            teacher=self.teacher.model if (self.teacher is not None and self.teacher.kind == "ema") else None,
            save_total_limit=self.cfg.save_total_limit, save_dtype=self.cfg.save_dtype,
            hf_state=self._hf_state(step) if self.info.is_main else None,
        )

    def _hf_state(self, step: int) -> dict:
        cfg = self.cfg
        rows = [r for _, r in iter_jsonl(self.log.path, allow_torn_tail=True)] if self.log is not None else []
        return hf_trainer_state(rows, step=step, max_steps=cfg.max_steps, save_steps=cfg.save_steps,
                                batch_size=cfg.num_prompts_per_step * cfg.num_generations,
                                epoch=step * cfg.num_prompts_per_step / len(self.problems))

    def _open_logs(self) -> None:
        cfg, info = self.cfg, self.info
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            write_json_atomic(self.output_dir / "train_config.json",
                              {**cfg.to_dict(), "world_size": info.world_size, "fsdp": self.sharded,
                               "versions": package_versions()})
            resume_step = self.start_step if self.resume_path else None
            self.log = MetricsLog(self.output_dir, resume_step=resume_step, reporters=cfg.reporters(),
                                  config=cfg.to_dict())
            # Every rollout of the run with its verdict and whether the teacher had a context.
            self.rollout_log = MetricsLog(self.output_dir, resume_step=resume_step, name="rollouts.jsonl")

    def _report_step(self, bar: tqdm, step: int, metrics: dict) -> None:
        """Progress bar postfix and, when no sample had a teacher context, a line saying so."""
        post = {"reward": f"{metrics['critic/rewards/mean']:.3f}",
                "loss": f"{metrics['actor/loss']:.4g}" if math.isfinite(metrics["actor/loss"]) else "-"}
        if self.spec.uses_teacher:
            post["ctx"] = f"{metrics['teacher/context_fraction']:.0%}"
            if metrics["teacher/context_fraction"] == 0 and self.info.is_main:
                bar.write(f"step {step}: {no_context_message(self.condition.name)}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(post)

    def train(self, *, stop_after: int | None = None) -> Path | None:
        """Run from the start (or the resumed step) to ``max_steps``; returns the last checkpoint.

        ``stop_after`` ends the loop after that step without a final save, as a kill would (for
        tests of resuming).
        """
        cfg = self.cfg
        self._open_logs()
        last: Path | None = None
        bar = tqdm(total=cfg.max_steps, initial=self.start_step, desc=f"train {cfg.algo}", unit="step",
                   disable=not self.info.is_main)
        try:
            save_s = None
            for step in range(self.start_step + 1, cfg.max_steps + 1):
                metrics = self.step(step)
                metrics["data/position"] = step * cfg.num_prompts_per_step
                if save_s is not None:  # the checkpoint saved at the end of the previous step
                    metrics["timing_s/save_checkpoint"] = save_s
                # Logged before the checkpoint: a kill in between redoes this step on resume (its
                # rows are dropped and rewritten), where the other order would lose them.
                self._log_rollouts(step)
                if self.log is not None:
                    self.log.write(step, metrics)
                save_s = None
                if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps:
                    t0 = time.perf_counter()
                    last = self.save(step)
                    save_s = time.perf_counter() - t0
                self._report_step(bar, step, metrics)
                if stop_after is not None and step >= stop_after:
                    return last
        finally:
            bar.close()
            self._close()
        return last

    def _close(self) -> None:
        self._lock.release()
        if self.log is not None and self.spec.uses_teacher and self.info.is_main:
            summary = context_summary(self.log.path)
            if summary is not None:
                tqdm.write(f"train {self.cfg.algo}: {summary}", file=sys.stderr)
        for log in (self.log, self.rollout_log):
            if log is not None:
                log.close()
        close = getattr(self.task, "close", None)
        if close is not None:
            close()

def train(cfg: TrainConfig, *, task: Any = None, stop_after: int | None = None) -> Path | None:
    """Run a training job (every process under ``torchrun`` calls this)."""
    return Trainer(cfg, task=task).train(stop_after=stop_after)
