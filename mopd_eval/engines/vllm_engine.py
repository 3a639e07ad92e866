"""The vLLM engine (extra ``vllm``): ``n`` samples per request, scoring by prompt log-probs.

* ``generate``: one request per prompt with ``SamplingParams(n=n, seed=...)``; the request seed
  is ``base.row_seed(seed, prompt_ids, 0)``, so a prompt's samples do not depend on what else
  is in the batch (vLLM seeds each request's generator separately).
* ``score``: each pair is one prompt ``teacher_prompt + target`` with ``max_tokens=1`` and
  ``prompt_logprobs=0`` (the log-prob of each actual prompt token); the target positions are read
  back.

What vLLM shares between scoring requests, and what it does not: requests that ask for
``prompt_logprobs`` skip *reading* the prefix cache (vLLM PR 17251; its docs, PR 23399), because
a cached prefix has no logits to return; every pair's prompt is therefore computed in full, and
the only sharing is batching (continuous batching packs many pairs into one forward). With the
cache on, such requests still *write* it, and their log-probs can depend on request order (vLLM
issue 42019). An engine built for scoring (``for_scoring=True``, the default) therefore runs with
``enable_prefix_caching=False``: the numbers are then a function of each pair alone. The
shared-prefix hf scorer (``tree_scoring``) is the one that encodes each shared prefix once, so it
is the fast scoring path on GPUs too; vLLM is the fast sampling path. An engine built only for
sampling (``for_scoring=False``) keeps vLLM's prefix caching (the ``n`` samples of a prompt share
its prefill) and refuses ``score``.

Options: ``tensor_parallel_size``, ``data_parallel_size``, ``dtype``, ``max_model_len``,
``enforce_eager`` and any other keyword go to ``vllm.LLM`` unchanged; ``gpu_memory_utilization``
defaults to 0.3 on CPU (where it is the fraction of host memory vLLM reserves) and 0.9 on GPUs.

vLLM runs with ``skip_tokenizer_init``: prompts are token ids already, and responses are decoded
by the model directory's transformers tokenizer, so both engines decode identically.
"""

from __future__ import annotations

import os

import numpy as np

from mopd_eval.engines.base import (
    Sample,
    check_generate_inputs,
    check_score_inputs,
    row_seed,
    stop_token_ids,
)


class VLLMEngine:
    """Engine on ``vllm.LLM`` (module docstring). Extra keyword arguments go to ``LLM`` unchanged."""

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        for_scoring: bool = True,
        **llm_kwargs,
    ) -> None:
        if for_scoring and llm_kwargs.get("enable_prefix_caching"):
            raise ValueError(
                "a scoring engine runs without prefix caching: with prompt_logprobs vLLM does not "
                "read the cache, and with it on the log-probs can depend on request order"
            )
        from transformers import AutoTokenizer
        from vllm import LLM
        from vllm.platforms import current_platform

        from mopd_eval.models import resolve_model

        path = resolve_model(model)
        if gpu_memory_utilization is None:
            gpu_memory_utilization = 0.3 if current_platform.is_cpu() else 0.9
        if for_scoring:
            llm_kwargs["enable_prefix_caching"] = False
        self.for_scoring = for_scoring
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.llm = LLM(
            model=str(path),
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=seed,
            skip_tokenizer_init=True,
            **llm_kwargs,
        )

    def generate(
        self,
        prompt_ids: list[list[int]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        check_generate_inputs(prompt_ids, n, temperature, top_p)
        if max_tokens < 1:
            return [[Sample("", [], "length") for _ in range(n)] for _ in prompt_ids]
        prompts = [_ints(p) for p in prompt_ids]
        # vLLM refuses n > 1 with greedy sampling; greedy samples are all the same anyway.
        n_req = 1 if temperature == 0 else n
        params = [
            SamplingParams(
                n=n_req,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                seed=row_seed(seed, p, 0),
                stop_token_ids=self.stop_ids,
                detokenize=False,
            )
            for p in prompts
        ]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        results = []
        for out in outs:
            samples = []
            for o in out.outputs:
                ids = list(o.token_ids)
                if ids and ids[-1] in self.stop_ids:
                    ids = ids[:-1]
                reason = "stop" if o.finish_reason == "stop" else "length"
                samples.append(
                    Sample(self.tokenizer.decode(ids, skip_special_tokens=True), ids, reason)
                )
            if n_req == 1 and n > 1:
                samples = [
                    Sample(samples[0].text, list(samples[0].token_ids), samples[0].finish_reason)
                    for _ in range(n)
                ]
            results.append(samples)
        return results

    def score(
        self,
        teacher_prompt_ids: list[list[int]],
        target_ids: list[list[int]],
        progress: bool = False,
    ) -> list[np.ndarray]:
        if not self.for_scoring:
            raise RuntimeError("this vLLM engine was built for sampling (prefix caching on); "
                               "build one with for_scoring=True to score")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        check_score_inputs(teacher_prompt_ids, target_ids)
        out = [np.zeros(len(t), dtype=np.float32) for t in target_ids]
        live = [i for i, t in enumerate(target_ids) if len(t) > 0]
        if not live:
            return out
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        prompts = [
            TokensPrompt(prompt_token_ids=_ints(teacher_prompt_ids[i]) + _ints(target_ids[i]))
            for i in live
        ]
        results = self.llm.generate(prompts, params, use_tqdm=progress)
        for i, res in zip(live, results, strict=True):
            start = len(teacher_prompt_ids[i])
            plp = res.prompt_logprobs
            out[i] = np.array(
                [plp[start + k][tok].logprob for k, tok in enumerate(_ints(target_ids[i]))],
                dtype=np.float32,
            )
        return out


def _ints(ids) -> list[int]:
    # vLLM serialises requests to its engine process and accepts only plain ints (not numpy's).
    return [int(t) for t in ids]
