"""Explanations scored against the user's own held-out review (docs/evaluation.md).

For each evaluated user whose held-out interaction (``valid`` or ``test``) has review text, the
model explains that item from the user's history at that point (train for ``valid``, train +
valid for ``test``). What the model wrote is compared with the review (cut at a sentence end, as
training targets are):

* **BLEU-4**: corpus BLEU over 1-4-grams with brevity penalty (torchmetrics ``BLEUScore``), on
  lower-cased text with words and punctuation split apart, 0-100 as in P5 and PETER;
* **ROUGE-L**: the mean over users of the longest-common-subsequence F1 (torchmetrics
  ``ROUGEScore``), 0-100; per-user values feed paired bootstrap CIs between systems;
* **grounding rate**: the share of explanations that name only items of the user's history or
  the explained item, and no quoted title outside the catalog (the explainer's
  ``TitleMatcher`` check; an explanation failing it is the one the server replaces by a
  data-built fallback). Scores are of the model's own text, never of that fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.data.text import clean_review
from ragrec.errors import RagrecError
from ragrec.eval.metrics import BootstrapResult, paired_bootstrap
from ragrec.eval.protocol import eval_users
from ragrec.inference.recommender import Recommender

__all__ = ["ExplanationEval", "text_metrics", "rouge_l", "review_targets", "evaluate_explanations"]

MAX_REVIEW_CHARS = 400  # the fine-tuning default for explain targets (FinetuneConfig.max_review_chars)
MIN_REVIEW_CHARS = 40


def _tokens(text: str) -> str:
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (0-100) of each prediction against its reference."""
    from torchmetrics.functional.text import rouge_score

    return np.array(
        [
            100 * float(rouge_score(p, r, rouge_keys="rougeL")["rougeL_fmeasure"])
            for p, r in zip(predictions, references)
        ]
    )


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 and mean ROUGE-L F1, both 0-100."""
    from torchmetrics.functional.text import bleu_score

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references (> 0), got {len(predictions)} and {len(references)}")
    bleu = bleu_score([_tokens(p) for p in predictions], [[_tokens(r)] for r in references], n_gram=4)
    return {"bleu4": 100 * float(bleu), "rouge_l": float(rouge_l(predictions, references).mean())}


@dataclass
class ExplanationEval:
    """One system's explanations for the evaluated users, with what they are scored against."""

    dataset: str
    system: str
    split: str
    users: list[str]
    items: list[str]
    references: list[str]
    texts: list[str]  # what the model wrote
    grounded: np.ndarray  # (U,) bool
    skipped: dict[str, int] = field(default_factory=dict)  # users left out, by reason
    seconds: float = 0.0
    shown: list[str] | None = None  # what the recommender showed (the checked sentences, or the fallback)
    fallback: np.ndarray | None = None  # (U,) bool: the shown text was built from the data
    names_evidence: np.ndarray | None = None  # (U,) bool: the shown text names a history item of the evidence

    def rouge_per_user(self) -> np.ndarray:
        return rouge_l(self.texts, self.references)

    def metrics(self) -> dict[str, float]:
        """BLEU-4 and ROUGE-L of what the model wrote, its grounding rate, and (where recorded) the
        fallback rate and the share of shown texts that name an evidence item."""
        out = {**text_metrics(self.texts, self.references), "grounded_rate": float(np.mean(self.grounded)),
               "users": len(self.users)}  # fmt: skip
        if self.fallback is not None:
            out["fallback_rate"] = float(np.mean(self.fallback))
        if self.names_evidence is not None:
            out["names_evidence_rate"] = float(np.mean(self.names_evidence))
        return out

    def compare(self, other: ExplanationEval, **kwargs) -> BootstrapResult:
        """Paired bootstrap of mean ROUGE-L F1, ``self - other`` (same users in the same order)."""
        if self.users != other.users or self.items != other.items:
            raise RagrecError("explanations compared on different users or items")
        return paired_bootstrap(self.rouge_per_user(), other.rouge_per_user(), metric="rouge_l", **kwargs)


def review_targets(data, split: str = S.TEST, *, max_chars: int = MAX_REVIEW_CHARS, min_chars: int = MIN_REVIEW_CHARS):
    """Users whose ``split`` interaction has a usable review: (users, histories, items,
    references) and how many users were left out, by reason."""
    users, histories, targets = eval_users(data, split)
    frame = data.interactions_frame()
    if S.REVIEW not in frame or frame[S.REVIEW].isna().all():
        raise RagrecError(f"dataset {data.name!r} has no review text: nothing to score explanations against")
    held = frame[frame[S.SPLIT] == split]
    reviews = {(str(u), str(i)): r for u, i, r in zip(held[S.USER_ID], held[S.ITEM_ID], held[S.REVIEW])}
    out: tuple[list, list, list, list] = ([], [], [], [])
    skipped = {"no review text": 0, f"review under {min_chars} characters": 0}
    for u, h, t in zip(users, histories, targets):
        text = reviews.get((u, t))
        cleaned = clean_review(text if isinstance(text, str) else None, max_chars)
        if not cleaned:
            skipped["no review text"] += 1
        elif len(cleaned) < min_chars:
            skipped[f"review under {min_chars} characters"] += 1
        else:
            for column, value in zip(out, (u, list(h), t, cleaned)):
                column.append(value)
    return (*out, {k: v for k, v in skipped.items() if v})


def evaluate_explanations(
    rec: Recommender,
    scenario: str | None = None,
    *,
    system: str = "LLM",
    split: str = S.TEST,
    users: Sequence[str] | None = None,
    progress: bool = True,
) -> ExplanationEval:
    """Explain each evaluated user's held-out item with ``rec`` (its adapter for ``scenario``,
    if any) and keep what the model wrote; ``users`` restricts the evaluated users."""
    import time

    sc = rec.scenario(scenario)
    ids, histories, items, refs, skipped = review_targets(sc.data, split)
    if users is not None:
        wanted = set(users)
        keep = [j for j, u in enumerate(ids) if u in wanted]
        ids, histories, items, refs = ([col[j] for j in keep] for col in (ids, histories, items, refs))
    if not ids:
        raise RagrecError(f"no {split} users with review text to explain for in {sc.data.name!r}")
    texts, grounded, shown, fallback, named = [], [], [], [], []
    start = time.perf_counter()
    for h, item in tqdm(list(zip(histories, items)), desc=f"explain ({split})", disable=not progress, leave=False):
        ex = rec.explain(item, history=h, scenario=sc.name)
        texts.append(ex.model_text)
        grounded.append(ex.grounded and bool(ex.model_text))
        shown.append(ex.text)
        fallback.append(ex.fallback is not None)
        cited = set(sc.matcher.cited(ex.text))  # items without titles (ids only) count when the id is written
        named.append(any(e.item_id in cited or e.item_id in ex.text for e in ex.evidence))
    return ExplanationEval(sc.data.name, system, split, ids, items, refs, texts, np.array(grounded, dtype=bool),
                           skipped, time.perf_counter() - start, shown, np.array(fallback, dtype=bool),
                           np.array(named, dtype=bool))  # fmt: skip
