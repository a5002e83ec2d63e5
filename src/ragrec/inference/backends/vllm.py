"""The vLLM backend (GPU; ``pip install 'ragrec[vllm]'``, ``RecommenderConfig.backend = "vllm"``).

One vLLM engine serves the base model with every scenario's LoRA adapter (``enable_lora``; a
scenario's requests carry its ``LoRARequest``, see :meth:`VllmBackend.bind`) and prefix caching on
(the prompts of one user share their history block).

* Letter and digit scores: one generated token per prompt, restricted to the scored tokens
  (``allowed_token_ids``), with the log-probabilities of all of them. vLLM returns raw,
  pre-restriction log-probabilities by default and caps them at the top 20, so the engine runs with
  ``logprobs_mode="processed_logprobs"`` (after the restriction) and ``max_logprobs`` above the
  26 letters: the values are then normalised over the scored tokens, a per-prompt constant away
  from the whole-vocabulary normalisation of the other backends, so every ranking (and the digit
  expectation of a rating) is the same.
* Text: greedy, ``max_new_tokens``, the template's ``repetition_penalty`` (vLLM applies it to the
  prompt's tokens as well as the answer's); the stop rule is applied to the finished text (greedy
  decoding makes that the same cut). vLLM has no no-repeat n-gram sampler: it is not applied here,
  a warning says so once, and the grounding check still refuses degenerate text. Catalog-constrained
  titles (a per-step trie) are refused with a clear error: use the transformers backend for them.
* Streams arrive as one piece (the offline engine returns whole answers).

It cannot run on a machine without CUDA; ``tests/test_vllm.py`` (marked ``gpu``) checks it where a
GPU is present.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.errors import RagrecError
from ragrec.inference.backends import Decoding

__all__ = ["VllmBackend"]

log = logging.getLogger(__name__)
MAX_LOGPROBS = 64  # above the 26 candidate letters and the rating digits


class VllmBackend:
    """:class:`~ragrec.inference.backends.Backend` over one ``vllm.LLM`` engine (see module docstring)."""

    name = "vllm"
    runs_adapters = True

    def __init__(
        self,
        loaded,
        *,
        model: str,
        max_tokens: int | None = None,
        trust_remote_code: bool = False,
        gpu_memory_utilization: float = 0.85,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        engine: Any = None,
        **_,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise RagrecError("the vllm backend needs vLLM and a CUDA GPU: pip install 'ragrec[vllm]'") from None
        from ragrec.inference.models import resolve_model

        self._vllm = vllm
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens
        self._lora: Any = None
        self._lora_ids: dict[str, int] = {}
        self._warned = False
        if engine is None:
            where, _how = resolve_model(model)
            engine = vllm.LLM(model=where, enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras,
                              enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                              max_logprobs=MAX_LOGPROBS, trust_remote_code=trust_remote_code,
                              gpu_memory_utilization=gpu_memory_utilization,
                              max_model_len=(max_tokens + 512) if max_tokens else None)  # fmt: skip
        self.llm = engine

    def bind(self, name: str | None, adapter: str | Path | None) -> VllmBackend:
        """This backend with the LoRA adapter of scenario ``name`` on its requests (``None``: the base)."""
        bound = copy.copy(self)
        if adapter is None:
            bound._lora = None
        else:
            from vllm.lora.request import LoRARequest

            lora_id = self._lora_ids.setdefault(str(name), len(self._lora_ids) + 1)  # shared by the copies
            bound._lora = LoRARequest(str(name), lora_id, str(adapter))
        return bound

    def _prompts(self, prompts: Sequence[str]) -> list[dict[str, list[int]]]:
        out = []
        for text in prompts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if self.max_tokens is not None and len(ids) > self.max_tokens:
                raise RagrecError(f"prompt of {len(ids)} tokens exceeds the budget of {self.max_tokens}")
            out.append({"prompt_token_ids": ids})
        return out

    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        if not prompts:
            return []
        params = []
        for ids in token_ids:
            wanted = sorted(set(int(t) for t in ids))
            if len(wanted) > MAX_LOGPROBS:
                raise RagrecError(f"{len(wanted)} scored tokens: the vllm backend reads at most {MAX_LOGPROBS}")
            params.append(self._vllm.SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=wanted,
                                                    logprobs=len(wanted)))  # fmt: skip
        outs = self.llm.generate(self._prompts(prompts), params, lora_request=self._lora, use_tqdm=False)
        result = []
        for out, ids in zip(outs, token_ids):
            step = out.outputs[0].logprobs[0]  # token id -> Logprob, normalised over the allowed tokens
            result.append(np.array([step[int(t)].logprob if int(t) in step else -np.inf for t in ids], np.float32))
        return result

    def generate(self, prompts: Sequence[str], decoding: Decoding) -> list[list[int]]:
        if decoding.allowed is not None:
            raise RagrecError("catalog-constrained generation is not available on the vllm backend; "
                              "use backend='transformers' for task='generate'")  # fmt: skip
        if decoding.no_repeat_ngram_size and not self._warned:
            log.warning("vllm backend: no-repeat %d-grams are not applied (vLLM has no such sampler); "
                        "the grounding check still refuses repeated text", decoding.no_repeat_ngram_size)  # fmt: skip
            self._warned = True
        eos = decoding.eos_token_id if decoding.eos_token_id is not None else self.tokenizer.eos_token_id
        params = self._vllm.SamplingParams(max_tokens=decoding.max_new_tokens, temperature=0.0,
                                           repetition_penalty=decoding.repetition_penalty,
                                           stop_token_ids=[eos] if eos is not None else None)  # fmt: skip
        outs = self.llm.generate(self._prompts(prompts), params, lora_request=self._lora, use_tqdm=False)
        result = []
        for out in outs:
            ids = [t for t in out.outputs[0].token_ids if t != eos]
            if decoding.stop is not None:  # greedy: the text up to where the rule stops is what an online stop gives
                for n in range(1, len(ids) + 1):
                    if decoding.stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True)):
                        ids = ids[:n]
                        break
            result.append(ids)
        return result

    def stream(
        self, prompt: str, decoding: Decoding, guard: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> Iterator[str]:
        with (guard or nullcontext)():
            ids = self.generate([prompt], decoding)[0]
        yield self.tokenizer.decode(ids, skip_special_tokens=True)
