"""Verbalizer ranking: candidates lettered in the prompt, scored in one forward pass.

The model reads the rank prompt (history + lettered candidates) and we read the next-token
log-probabilities of the label tokens ``A, B, C, ...`` at the answer position
(``logits_to_keep=1``: only the last position's logits are computed). No text is generated.
Every label must be a single token for the tokenizer; that is checked, not assumed.
Optional permutation averaging re-asks with the candidates cyclically shifted and averages each
candidate's score, against the position bias of small LMs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragrec.errors import RagrecError
from ragrec.inference.backends import Backend
from ragrec.inference.models import LoadedModel
from ragrec.inference.runner import PromptRunner
from ragrec.prompts import (
    PromptBudget,
    PromptTemplate,
    candidate_labels,
    chat_text,
    count_tokens,
    fit_history,
    rank_context,
)
from ragrec.types import Item, RankedItem

__all__ = ["LetterRanker"]


class LetterRanker(PromptRunner):
    """Scores lettered candidates with a causal LM (see module docstring)."""

    output_kind = "label"

    def backend_options(self) -> dict:
        return {"batch_size": self.batch_size, "max_tokens": self.budget.max_tokens}

    def __init__(
        self,
        loaded: LoadedModel,
        template: PromptTemplate,
        *,
        budget: PromptBudget | None = None,
        batch_size: int = 8,
        backend: Backend | None = None,
    ) -> None:
        self.batch_size = batch_size
        # What reads the letters' log-probabilities (default: transformers over ``loaded``).
        super().__init__(loaded, template, budget=budget, backend=backend)
        self._label_ids: dict[str, int] = {}
        self._labels_for: dict[int, list[str]] = {}  # n -> labels; prompts() asks once per user

    def labels_for(self, n: int) -> list[str]:
        """``n`` labels in the order ``A..Z, AA, AB, ...``, skipping any that is not a single token
        for this tokenizer (so lists longer than 26 work where two-letter labels are tokens)."""
        if n in self._labels_for:
            return self._labels_for[n]
        out = []
        for label in candidate_labels(max(n * 4, 26 + 26 * 26) if n > 26 else n):
            try:
                self.label_ids([label])
            except RagrecError:
                continue
            out.append(label)
            if len(out) == n:
                self._labels_for[n] = out
                return out
        raise RagrecError(f"this tokenizer has only {len(out)} single-token candidate labels; rank fewer than {n}")

    def label_ids(self, labels: Sequence[str]) -> list[int]:
        """Token id of each label; raises if a label is not exactly one token."""
        out = []
        for label in labels:
            if label not in self._label_ids:
                tid = self.loaded.single_token_id(label)
                # One known token, and that token really decodes back to the label.
                if tid is None or self.loaded.tokenizer.decode([tid]).strip() != label:
                    raise RagrecError(
                        f"label {label!r} is not a single token for this tokenizer; rank fewer candidates at once"
                    )
                self._label_ids[label] = tid
            out.append(self._label_ids[label])
        return out

    def prompts(
        self, histories: Sequence[Sequence[Item]], candidates: Sequence[Sequence[Item]], item_noun: str
    ) -> tuple[list[str], list[list[str]]]:
        """Chat-formatted prompt strings (ending where the answer starts) and their labels."""
        tok = self.loaded.tokenizer
        texts, labels = [], []
        for history, cands in zip(histories, candidates):
            history = list(history)[-self.budget.max_history :] if self.budget.max_history else []
            labs = self.labels_for(len(cands)) if cands else []
            messages, _ = fit_history(
                self.template,
                lambda n, h=history, c=cands, lb=labs: rank_context(
                    h[len(h) - n :] if n else [], c, item_noun, self.budget, lb
                )[0],
                lambda m: count_tokens(tok, m),
                self.budget,
            )
            texts.append(chat_text(tok, messages))
            labels.append(labs)
        return texts, labels

    def label_scores(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Log-probability of each label token at the answer position, per prompt (in input order),
        read by the backend (default: transformers, batched by prompt length)."""
        return self.backend.token_logprobs(texts, [self.label_ids(labs) for labs in labels])

    def rank(
        self,
        histories: Sequence[Sequence[Item]],
        candidates: Sequence[Sequence[Item]],
        *,
        item_noun: str = "item",
        permutations: int = 1,
    ) -> list[list[RankedItem]]:
        """Full ranking of each user's candidates, best first.

        ``permutations`` > 1 averages scores over that many cyclic shifts of the candidate order.
        """
        if len(histories) != len(candidates):
            raise RagrecError(f"{len(histories)} histories for {len(candidates)} candidate lists")
        if permutations < 1:
            raise RagrecError(f"permutations must be >= 1, got {permutations}")
        totals = [np.zeros(len(c)) for c in candidates]
        labels_used: list[list[str]] = [[] for _ in candidates]
        for shift in range(permutations):
            shifted = [list(c)[shift % len(c) :] + list(c)[: shift % len(c)] if c else [] for c in candidates]
            texts, labels = self.prompts(histories, shifted, item_noun)
            scores = self.label_scores(texts, labels)
            for u, s in enumerate(scores):
                totals[u] += np.roll(s, shift)  # shifted[pos] is original candidate (pos + shift) % n
                if shift == 0:
                    labels_used[u] = labels[u]
        results = []
        for cands, total, labs in zip(candidates, totals, labels_used):
            mean = total / permutations
            order = np.argsort(-mean, kind="stable")
            results.append(
                [RankedItem(cands[i].item_id, float(mean[i]), r, labs[i]) for r, i in enumerate(order, start=1)]
            )
        return results
