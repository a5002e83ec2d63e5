"""The transformers backend (the default): a Hugging Face causal LM, optionally with peft adapters
and bitsandbytes quantization, as loaded by :func:`ragrec.inference.load_model`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ragrec.errors import RagrecError

__all__ = ["TransformersBackend"]


class TransformersBackend:
    """:class:`~ragrec.inference.backends.Backend` over a ``LoadedModel``. Prompts are batched by
    token length (shortest first, ``batch_size`` per forward pass), so a batch pads little: padded
    positions cost as much compute as real ones. ``max_tokens`` refuses longer prompts."""

    name = "transformers"

    def __init__(self, loaded, *, batch_size: int = 8, max_tokens: int | None = None, **_) -> None:
        self.loaded, self.batch_size, self.max_tokens = loaded, batch_size, max_tokens

    @torch.no_grad()
    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        tok, model = self.loaded.tokenizer, self.loaded.model
        device = next(model.parameters()).device
        lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=False)["input_ids"]] if prompts else []
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[np.ndarray | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = tok([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            if self.max_tokens is not None and enc["input_ids"].shape[1] > self.max_tokens:
                raise RagrecError(
                    f"prompt of {enc['input_ids'].shape[1]} tokens exceeds the budget of {self.max_tokens}"
                )
            logits = (
                model(**enc, logits_to_keep=1).logits[:, -1, :].float()
            )  # (B, V): left padding puts every answer last
            logp = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(rows):
                out[i] = logp[row, torch.tensor(list(token_ids[i]), device=device)].cpu().numpy()  # (C,)
        return out  # type: ignore[return-value]
