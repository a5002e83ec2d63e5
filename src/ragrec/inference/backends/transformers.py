"""The transformers backend (the default): a Hugging Face causal LM, optionally with peft adapters
and bitsandbytes quantization, as loaded by :func:`ragrec.inference.load_model`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from ragrec.errors import RagrecError
from ragrec.inference.backends import Decoding

__all__ = ["TransformersBackend"]


class TransformersBackend:
    """:class:`~ragrec.inference.backends.Backend` over a ``LoadedModel``. Scoring batches prompts by
    token length (shortest first, ``batch_size`` per forward pass), so a batch pads little: padded
    positions cost as much compute as real ones. ``max_tokens`` refuses longer prompts."""

    name = "transformers"
    runs_adapters = True

    def __init__(self, loaded, *, batch_size: int = 8, max_tokens: int | None = None, **_) -> None:
        self.loaded, self.batch_size, self.max_tokens = loaded, batch_size, max_tokens
        self.tokenizer = loaded.tokenizer

    def bind(self, name: str | None, adapter: Any) -> TransformersBackend:
        return self  # peft adapters are switched on the shared model by the recommender's ModelHost

    def _encode(self, prompts: Sequence[str]):
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                             add_special_tokens=False)  # fmt: skip
        if self.max_tokens is not None and enc["input_ids"].shape[1] > self.max_tokens:
            raise RagrecError(f"prompt of {enc['input_ids'].shape[1]} tokens exceeds the budget of {self.max_tokens}")
        return enc.to(next(self.loaded.model.parameters()).device)

    @torch.no_grad()
    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        if not prompts:
            return []
        model = self.loaded.model
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[np.ndarray | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = self._encode([prompts[i] for i in rows])
            logits = model(**enc, logits_to_keep=1).logits[:, -1, :].float()  # (B, V): left padding puts answers last
            logp = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(rows):
                out[i] = logp[row, torch.tensor(list(token_ids[i]), device=logp.device)].cpu().numpy()  # (C,)
        return out  # type: ignore[return-value]

    def _kwargs(self, decoding: Decoding, prompt_len: int) -> dict[str, Any]:
        """``generate`` settings. The repetition controls look at the answer only: transformers' own
        ``no_repeat_ngram_size`` would also ban every n-gram of the prompt, so the model could not
        write a history title it was shown."""
        from transformers import (
            LogitsProcessorList,
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            StoppingCriteria,
            StoppingCriteriaList,
        )

        tok = self.tokenizer

        class AnswerNoRepeat(NoRepeatNGramLogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                return super().__call__(input_ids[:, prompt_len:], scores)

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
                texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
                return torch.tensor([bool(decoding.stop(t)) for t in texts], device=input_ids.device)

        processors = LogitsProcessorList()
        if decoding.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty,
                                                               prompt_ignore_length=prompt_len))  # fmt: skip
        if decoding.no_repeat_ngram_size:
            processors.append(AnswerNoRepeat(decoding.no_repeat_ngram_size))
        eos = decoding.eos_token_id if decoding.eos_token_id is not None else tok.eos_token_id
        kwargs: dict[str, Any] = dict(max_new_tokens=decoding.max_new_tokens, do_sample=False, eos_token_id=eos,
                                      pad_token_id=tok.pad_token_id, logits_processor=processors)  # fmt: skip
        if decoding.stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([Stop()])
        if decoding.allowed is not None:
            allowed = decoding.allowed
            kwargs["prefix_allowed_tokens_fn"] = lambda row, ids: list(allowed(row, ids[prompt_len:].tolist()))
        return kwargs

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], decoding: Decoding) -> list[list[int]]:
        if not prompts:
            return []
        enc = self._encode(prompts)
        prompt_len = enc["input_ids"].shape[1]  # left-padded: every row's answer starts here
        kwargs = self._kwargs(decoding, prompt_len)
        out = self.loaded.model.generate(**enc, **kwargs)[:, prompt_len:].tolist()
        ends = {kwargs["eos_token_id"], self.tokenizer.pad_token_id} - {None}
        return [row[: next((j for j, t in enumerate(row) if t in ends), len(row))] for row in out]

    def stream(
        self, prompt: str, decoding: Decoding, guard: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        enc = self._encode([prompt])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs = dict(**enc, **self._kwargs(decoding, enc["input_ids"].shape[1]), streamer=streamer)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                with (guard or nullcontext)(), torch.no_grad():
                    self.loaded.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the reading thread
                failed.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failed:
            raise failed[0]
