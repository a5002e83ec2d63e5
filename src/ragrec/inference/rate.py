"""Rating prediction: the expectation of the rating under the model's next-token distribution
restricted to the digit tokens (``1``..``5``), read in one forward pass like ranking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ragrec.data.text import render_item_text
from ragrec.errors import RagrecError
from ragrec.inference.runner import PromptRunner
from ragrec.prompts import chat_text, history_block, sanitize
from ragrec.types import Item

__all__ = ["RatingPredictor", "RatingPrediction"]


@dataclass(frozen=True)
class RatingPrediction:
    """Expected rating and the probability of each allowed value."""

    item_id: str
    expected: float
    distribution: dict[str, float]


class RatingPredictor(PromptRunner):
    """Predicts ratings with the ``rate`` template (output contract: digits)."""

    output_kind = "digit"

    def backend_options(self) -> dict:
        return {"max_tokens": None}

    def setup(self) -> None:
        self.values = list(self.template.output.values)
        self.ids = []
        for v in self.values:
            tid = self.loaded.single_token_id(v)
            if tid is None:
                raise RagrecError(f"rating value {v!r} is not a single token for this tokenizer")
            self.ids.append(tid)

    def prompts(
        self,
        history: Sequence[Item],
        ratings: Sequence[float | None],
        items: Sequence[Item],
        *,
        item_noun: str = "item",
    ) -> list[str]:
        """Chat-formatted prompts (ending where the rating digit is read), one per item."""
        block = history_block(history, self.budget, ratings)
        texts = []
        for item in items:
            line = sanitize(
                render_item_text(item, max_chars=self.budget.max_item_chars * 2), self.budget.max_item_chars
            )
            msgs = self.template.render({"item_noun": item_noun, "history": block, "item": line})
            texts.append(chat_text(self.loaded.tokenizer, msgs))
        return texts

    def predict(
        self,
        history: Sequence[Item],
        ratings: Sequence[float | None],
        items: Sequence[Item],
        *,
        item_noun: str = "item",
    ) -> list[RatingPrediction]:
        """Predicted rating of each of ``items`` for a user with ``history`` (and its ratings)."""
        texts = self.prompts(history, ratings, items, item_noun=item_noun)
        if not texts:
            return []
        logp = torch.from_numpy(np.stack(self.backend.token_logprobs(texts, [self.ids] * len(texts))))  # (B, 5)
        probs = torch.softmax(logp, dim=-1)  # renormalised over the digits
        values = torch.tensor([float(v) for v in self.values])
        expected = probs.cpu() @ values
        return [
            RatingPrediction(item.item_id, float(e), {v: float(p) for v, p in zip(self.values, row)})
            for item, e, row in zip(items, expected, probs.cpu())
        ]
