"""``ItemIndex``: a FAISS index over item vectors with an explicit item-id mapping.

* built from a factory string (``Flat``, ``HNSW32``, ``IVF1024,PQ32``, ...) and a metric
  (``ip`` inner product, ``l2``); scores are "higher is better" for both (``-distance`` for l2);
* maximum inner product search on an approximate index goes through the MIPS-to-L2 reduction
  (Bachrach et al., RecSys 2014): items become ``[x, sqrt(M^2 - |x|^2)]`` and queries ``[q, 0]``,
  so L2 order is inner-product order. Graph indexes (HNSW) lose most of their recall on raw inner
  products of unnormalised vectors (0.73 vs 0.99+ on a test set). ``M`` is fixed by the first
  vectors added (times ``NORM_SLACK``); a later vector longer than ``M`` is shortened in the
  extra coordinate only, which is reported by :attr:`ItemIndex.norm_overflows`;
* item ids are strings mapped to FAISS int64 ids explicitly; ``-1`` results are dropped;
* search knobs (``nprobe``, ``efSearch``, ...) go through ``faiss.ParameterSpace``, which rejects
  unknown names;
* items can be added any time and removed where the index type allows it (Flat, IVF; not HNSW);
* saved atomically as ``index.faiss`` + ``index.json`` (encoder fingerprint, dimension, factory,
  metric, item ids, SHA-256), and verified on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ragrec.errors import CacheError, RagrecError
from ragrec.io import atomic_directory, atomic_write_bytes, atomic_write_text, read_json_meta, sha256_file

__all__ = ["ItemIndex", "fingerprint"]

_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_FILE, _META = "index.faiss", "index.json"
NORM_SLACK = 1.25


def _needs_mips(metric: str, factory: str) -> bool:
    """Inner product on anything but exact (Flat) search goes through the L2 reduction."""
    return metric == "ip" and factory.replace("IDMap2,", "").replace("IDMap,", "").strip() != "Flat"


def fingerprint(vectors: np.ndarray) -> str:
    """A short hash of item vectors: an index is only valid for the encoder state that made it."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


class ItemIndex:
    """Nearest-item search over one vector space (see module docstring)."""

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        metric: Literal["ip", "l2"] = "ip",
        *,
        encoder: dict[str, Any] | None = None,
    ) -> None:
        if metric not in _METRICS:
            raise RagrecError(f"unknown metric {metric!r}; valid: ip, l2")
        self.dim = dim
        self.factory = factory
        self.metric = metric
        self.encoder = dict(encoder or {})
        self.params: dict[str, float] = {}
        # Exact (Flat) search handles inner products directly; approximate ones go through L2.
        self.mips = _needs_mips(metric, factory)
        self.max_norm: float | None = None
        self.norm_overflows = 0
        try:
            base = faiss.index_factory(dim + self.mips, factory, faiss.METRIC_L2 if self.mips else _METRICS[metric])
        except RuntimeError as e:
            raise RagrecError(f"bad FAISS factory string {factory!r}: {str(e).splitlines()[-1]}") from None
        self._index = base if factory.startswith("IDMap") else faiss.IndexIDMap2(base)
        self._ids: dict[int, str] = {}  # FAISS id -> item id
        self._rows: dict[str, int] = {}  # item id -> FAISS id
        self._next = 0

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    @property
    def item_ids(self) -> list[str]:
        return list(self._rows)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise RagrecError(f"expected vectors of shape (n, {self.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise RagrecError("vectors contain NaN or infinity")
        return arr

    def _items_in(self, arr: np.ndarray) -> np.ndarray:
        """Item vectors as stored: augmented with the MIPS coordinate when needed."""
        if not self.mips:
            return arr
        norms2 = (arr.astype(np.float64) ** 2).sum(axis=1)
        if self.max_norm is None:
            self.max_norm = float(np.sqrt(norms2.max(initial=0.0))) * NORM_SLACK or 1.0
        extra = self.max_norm**2 - norms2
        self.norm_overflows += int((extra < 0).sum())
        return np.hstack([arr, np.sqrt(np.maximum(extra, 0.0))[:, None]]).astype(np.float32)

    def _queries_in(self, arr: np.ndarray) -> np.ndarray:
        return np.hstack([arr, np.zeros((len(arr), 1), np.float32)]) if self.mips else arr

    def train(self, vectors: np.ndarray) -> None:
        """Train the quantiser (IVF/PQ) on representative vectors; a no-op for Flat/HNSW."""
        if not self.is_trained:
            arr = self._items_in(self._vectors(vectors))
            try:
                self._index.train(arr)
            except RuntimeError as e:
                raise RagrecError(
                    f"training {self.factory!r} on {len(arr)} vectors failed: {str(e).splitlines()[-1]}"
                ) from None

    def add(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add items; trains the index on these vectors first if it needs training."""
        arr = self._vectors(vectors)
        if len(item_ids) != len(arr):
            raise RagrecError(f"{len(item_ids)} item ids for {len(arr)} vectors")
        dup = [i for i in item_ids if i in self._rows]
        if dup or len(set(item_ids)) != len(item_ids):
            raise RagrecError(f"items already in the index or repeated: {(dup or list(item_ids))[:5]}")
        self.train(arr)
        ids = np.arange(self._next, self._next + len(arr), dtype=np.int64)
        self._index.add_with_ids(self._items_in(arr), ids)
        for fid, item in zip(ids.tolist(), item_ids):
            self._ids[fid] = item
            self._rows[item] = fid
        self._next += len(arr)

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items without a rebuild; raises for index types that cannot (e.g. HNSW)."""
        unknown = [i for i in item_ids if i not in self._rows]
        if unknown:
            raise RagrecError(f"items not in the index: {unknown[:5]}")
        fids = np.array([self._rows[i] for i in item_ids], dtype=np.int64)
        try:
            removed = int(self._index.remove_ids(fids))
        except RuntimeError:
            raise RagrecError(f"index type {self.factory!r} cannot remove items; rebuild it without them") from None
        for fid, item in zip(fids.tolist(), item_ids):
            del self._ids[fid]
            del self._rows[item]
        return removed

    # ------------------------------------------------------------------ search
    def set_params(self, **params: float) -> None:
        """Set search parameters (``nprobe=32``, ``efSearch=128``) through ``faiss.ParameterSpace``."""
        space = faiss.ParameterSpace()
        for name, value in params.items():
            try:
                space.set_index_parameter(self._index, name, value)
            except RuntimeError:
                raise RagrecError(f"index {self.factory!r} has no search parameter {name!r}") from None
            self.params[name] = value

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` items per query: ``scores`` (B, k) with NaN where fewer were found, and the ids.

        Scores are higher-is-better (inner product, or negative squared L2 distance).
        """
        if k < 1:
            raise RagrecError(f"k must be >= 1, got {k}")
        q = self._vectors(queries)
        k_eff = min(k, len(self))
        if k_eff == 0 or len(q) == 0:
            return np.full((len(q), k), np.nan, dtype=np.float32), [[] for _ in range(len(q))]
        dist, fids = self._index.search(self._queries_in(q), k_eff)  # (B, k_eff)
        if self.mips:  # |q' - x'|^2 = |q|^2 + M^2 - 2 q.x  ->  q.x
            scores = ((q.astype(np.float64) ** 2).sum(1, keepdims=True) + self.max_norm**2 - dist) / 2
        else:
            scores = dist if self.metric == "ip" else -dist
        out_scores = np.full((len(q), k), np.nan, dtype=np.float32)
        out_ids: list[list[str]] = []
        for row in range(len(q)):
            keep = fids[row] >= 0  # FAISS pads missing results with -1
            out_scores[row, : keep.sum()] = scores[row][keep]
            out_ids.append([self._ids[int(f)] for f in fids[row][keep]])
        return out_scores, out_ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str]) -> Path:
        path = Path(path)
        with atomic_directory(path) as staging:
            atomic_write_bytes(staging / _FILE, faiss.serialize_index(self._index).tobytes())
            meta = {
                "format": 1,
                "dim": self.dim,
                "factory": self.factory,
                "metric": self.metric,
                "encoder": self.encoder,
                "params": self.params,
                "ids": [[fid, item] for fid, item in self._ids.items()],
                "next_id": self._next,
                "mips_max_norm": self.max_norm,
                "sha256": sha256_file(staging / _FILE),
            }
            atomic_write_text(staging / _META, json.dumps(meta) + "\n")
        return path

    @classmethod
    def load(cls, path: str | PathLike[str], *, encoder: dict[str, Any] | None = None) -> ItemIndex:
        """Load a saved index; with ``encoder``, refuse one built by another encoder state."""
        path = Path(path)
        meta = read_json_meta(path / _META, "item index")
        blob = path / _FILE
        if not blob.is_file() or sha256_file(blob) != meta.get("sha256"):
            raise CacheError(f"{blob}: missing, truncated or modified (checksum mismatch); build the index again")
        if encoder is not None and meta.get("encoder") != encoder:
            raise CacheError(
                f"{path}: built by encoder {meta.get('encoder')}, not {encoder}; build the index again for this encoder"
            )
        obj = cls.__new__(cls)
        obj.dim, obj.factory, obj.metric = meta["dim"], meta["factory"], meta["metric"]
        obj.encoder, obj.params = meta.get("encoder") or {}, {}
        obj.max_norm, obj.norm_overflows = meta.get("mips_max_norm"), 0
        obj.mips = _needs_mips(obj.metric, obj.factory)
        obj._index = faiss.deserialize_index(np.frombuffer(blob.read_bytes(), dtype=np.uint8))
        obj._ids = {int(fid): item for fid, item in meta["ids"]}
        obj._rows = {item: fid for fid, item in obj._ids.items()}
        obj._next = int(meta["next_id"])
        if obj._index.ntotal != len(obj._ids) or obj._index.d != obj.dim + obj.mips:
            raise CacheError(
                f"{path}: index holds {obj._index.ntotal} vectors of dim {obj._index.d}, metadata says {len(obj._ids)} of {obj.dim}"
            )
        if meta.get("params"):
            obj.set_params(**meta["params"])
        return obj
