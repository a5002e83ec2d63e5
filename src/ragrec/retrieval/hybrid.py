"""Hybrid: weighted fusion of several encoders' scores, searchable by one FAISS index.

``score(user, item) = sum_i w_i * score_i(user, item) / sd_i(user)`` is realised by
concatenating ``sqrt(w_i) * item_vector_i`` on the item side and ``sqrt(w_i) * query_i /
sd_i(user)`` on the query side. ``sd_i(user)``, the spread of the user's part-``i`` scores over
the catalog, puts parts with very different score scales (SASRec logits, EASE weights, cosine
similarities) on one footing per user; it is exact in vector form, since the standard deviation
of ``q . e_j`` over items ``j`` is ``sqrt(q^T C q)`` with ``C`` the covariance of the item vectors.
(Per-user mean shifts do not change a ranking, so they are left out.) ``normalize=False`` fuses
raw scores.
Items that a collaborative part never saw in training (cold items) get a zero vector in that
part, so they are ranked by the other parts (e.g. text) alone: new items with text but no
interactions are retrievable. Weights are chosen on validation targets with :meth:`tune`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ragrec.retrieval.base import ENCODERS, Encoder

__all__ = ["HybridEncoder"]


@ENCODERS.decorator("hybrid")
class HybridEncoder(Encoder):
    """Fusion of ``parts`` with non-negative ``weights`` (see module docstring).

    ``cold`` maps a part's position to the catalog rows it cannot score (zeroed in that part).
    Every part must share the same catalog (``item_ids``).
    """

    kind = "hybrid"

    def __init__(
        self,
        parts: Sequence[Encoder],
        weights: Sequence[float],
        cold: Mapping[int, Sequence[int]] | None = None,
        normalize: bool = True,
    ) -> None:
        if not parts or len(parts) != len(weights):
            raise ValueError(f"need one weight per part, got {len(parts)} parts and {len(weights)} weights")
        if any(w < 0 for w in weights):
            raise ValueError(f"weights must be >= 0, got {list(weights)}")
        for p in parts[1:]:
            if p.item_ids != parts[0].item_ids:
                raise ValueError(f"part {p.kind!r} has another catalog than part {parts[0].kind!r}")
        super().__init__(parts[0].item_ids)
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]
        self.cold = {int(k): sorted(int(r) for r in v) for k, v in (cold or {}).items()}
        self.normalize = normalize
        self._part_items: dict[int, np.ndarray] = {}
        self._part_cov: dict[int, np.ndarray] = {}

    def _items_of(self, i: int) -> np.ndarray:
        """Part ``i``'s item vectors with its cold rows zeroed (unweighted)."""
        if i not in self._part_items:
            emb = self.parts[i].item_embeddings().astype(np.float32)
            if self.cold.get(i):
                emb = emb.copy()
                emb[self.cold[i]] = 0.0
            self._part_items[i] = emb
        return self._part_items[i]

    def _query_scale(self, i: int, queries: np.ndarray) -> np.ndarray:
        """(B,) 1 / spread of each query's part-``i`` scores over the catalog (1 without normalize)."""
        if not self.normalize:
            return np.ones(len(queries))
        if i not in self._part_cov:
            emb = self._items_of(i).astype(np.float64)
            centred = emb - emb.mean(axis=0)
            self._part_cov[i] = centred.T @ centred / len(emb)  # (d, d), population covariance
        var = np.einsum("bd,de,be->b", queries, self._part_cov[i], queries)
        return 1.0 / np.sqrt(np.maximum(var, 1e-12))

    def item_embeddings(self) -> np.ndarray:
        return self.item_rows(range(len(self.item_ids)))

    def item_rows(self, rows: Sequence[int]) -> np.ndarray:
        rows = list(rows)
        return np.hstack([self._items_of(i)[rows] * np.sqrt(w) for i, w in enumerate(self.weights)]).astype(np.float32)

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        blocks = []
        for i, (part, w) in enumerate(zip(self.parts, self.weights)):
            q = part.encode_histories(histories).astype(np.float64)
            blocks.append(q * (self._query_scale(i, q) * np.sqrt(w))[:, None])
        return np.hstack(blocks).astype(np.float32)

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, N) fused scores, computed part by part (same values as the concatenated vectors,
        without materialising wide queries such as EASE's)."""
        total = np.zeros((len(histories), len(self.item_ids)), dtype=np.float32)
        for i, w in enumerate(self.weights):
            if w:
                total += w * self._part_scores(i, histories)
        return total

    def _part_scores(self, i: int, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, N) part ``i``'s scores, cold items zeroed, divided by their spread per user."""
        s = self.parts[i].scores(histories)
        if self.cold.get(i):
            s[:, self.cold[i]] = 0.0
        if self.normalize:
            s = s / np.maximum(s.std(axis=1, keepdims=True), 1e-6)
        return s.astype(np.float32)

    def with_weights(self, weights: Sequence[float]) -> HybridEncoder:
        return HybridEncoder(self.parts, weights, self.cold, self.normalize)

    @classmethod
    def tune(
        cls,
        parts: Sequence[Encoder],
        histories: Sequence[Sequence[str]],
        targets: Sequence[str],
        grid: Sequence[Sequence[float]],
        *,
        cold: Mapping[int, Sequence[int]] | None = None,
        metric: str = "ndcg@10",
        normalize: bool = True,
    ) -> tuple[HybridEncoder, list[tuple[tuple[float, ...], float]]]:
        """Pick the weights (one value list per part, all combinations tried) that maximise
        ``metric`` on validation ``targets`` given ``histories`` (seen items masked).

        Returns the best encoder and every (weights, metric) tried. Weight 1 of the first part is
        fixed by the grid the caller gives (pass ``[[1.0], [...], ...]``).
        """
        from ragrec.ranking import per_user, target_ranks

        hybrid = cls(parts, [1.0] * len(parts), cold, normalize)
        per_part = [torch.from_numpy(hybrid._part_scores(i, histories)) for i in range(len(parts))]  # (B, N) each
        mask = torch.zeros_like(per_part[0], dtype=torch.bool)
        for row, h in enumerate(histories):
            mask[row, hybrid.indices(h)] = True
        target_rows = torch.tensor([hybrid.item_index[t] for t in targets])
        tried = []
        for combo in itertools.product(*grid):
            scores = sum(w * s for w, s in zip(combo, per_part))
            ranks = target_ranks(scores, target_rows, mask).numpy()
            tried.append((tuple(float(w) for w in combo), float(per_user(ranks, metric).mean())))
        best = max(tried, key=lambda t: t[1])[0]
        return hybrid.with_weights(best), tried

    # -- persistence
    def _config(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "normalize": self.normalize,
            "cold": {str(k): v for k, v in self.cold.items()},
            "parts": [{"kind": p.kind, "config": p._config()} for p in self.parts],
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"part{i}.{name}": t for i, p in enumerate(self.parts) for name, t in p._tensors().items()}

    @classmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> HybridEncoder:
        parts = []
        for i, spec in enumerate(config["parts"]):
            prefix = f"part{i}."
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            parts.append(ENCODERS.get(spec["kind"])._rebuild(item_ids, spec["config"], own))
        return cls(
            parts, config["weights"], {int(k): v for k, v in config["cold"].items()}, config.get("normalize", True)
        )
