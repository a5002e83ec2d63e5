"""Recommendations for many users at once, written to Parquet: ``ragrec batch-recommend``.

The users are cut into fixed chunks; each chunk is one ``Recommender.recommend_batch`` call. The
``local`` engine runs the chunks in this process; the ``ray`` engine (``pip install
'ragrec[ray]'``) runs them on Ray actors, one recommender (one model) per worker, locally with
``workers`` processes or on a cluster given by ``address``. Both engines make the same chunks and
order the rows the same way, so their outputs agree (``tests/test_batch.py``); each worker uses
``threads`` torch threads.

Output columns: ``user_id``, ``scenario``, ``rank``, ``item_id``, ``score``, ``retriever_score``,
``fallback`` (why a user got popularity candidates; null otherwise). A user with nothing to
recommend (every item seen) has no rows.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from ragrec.errors import RagrecError
from ragrec.io import atomic_write_bytes

__all__ = ["batch_recommend", "recommend_rows", "read_users", "BatchReport", "COLUMNS"]

COLUMNS = ("user_id", "scenario", "rank", "item_id", "score", "retriever_score", "fallback")
ENGINES = ("local", "ray")


@dataclass
class BatchReport:
    """What :func:`batch_recommend` did: users, rows, chunks, engine, workers, seconds, users/s."""

    users: int
    rows: int
    chunks: int
    engine: str
    workers: int
    seconds: float
    out: str
    notes: list[str] = field(default_factory=list)

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


def read_users(spec: str, path: str | PathLike[str], scenario: str | None = None) -> list[str]:
    """The users to score: ``all`` (every known user of the scenario, in id order) or a file with one
    user id per line (a CSV/TSV with a ``user_id`` column also works); duplicates are kept once."""
    if spec == "all":
        from ragrec.inference.persistence import load_parts

        _, scenarios = load_parts(path)
        by_name = {s.name: s for s in scenarios}
        if scenario is not None and scenario not in by_name:
            raise RagrecError(f"unknown scenario {scenario!r}; valid: {', '.join(by_name)}")
        return known_users(by_name[scenario] if scenario is not None else scenarios[0])
    file = Path(spec)
    if not file.is_file():
        raise RagrecError(f"--users: {spec!r} is neither 'all' nor a file")
    try:
        lines = [ln.strip() for ln in file.read_text("utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise RagrecError(f"{file}: not UTF-8 text") from None
    if lines and lines[0].replace("\t", ",").split(",")[0] == "user_id":  # a table: take its user_id column
        import pandas as pd

        sep = "\t" if "\t" in lines[0] else ","
        lines = pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, dtype=str)["user_id"].dropna().tolist()
    users = list(dict.fromkeys(lines))
    if not users:
        raise RagrecError(f"{file}: no user ids")
    return users


def known_users(sc) -> list[str]:
    """Every known user of scenario ``sc``, in id order."""
    import pandas as pd

    from ragrec.data.dataset import id_sort_key

    ids = pd.Series(list(sc.histories))
    return ids.iloc[id_sort_key(ids).argsort(kind="stable")].tolist()


def recommend_rows(rec, users: Sequence[str], *, scenario: str | None = None, k: int = 10) -> list[tuple]:
    """Rows (in :data:`COLUMNS` order) of one ``recommend_batch`` call for ``users``."""
    rows = []
    for r in rec.recommend_batch(list(users), scenario=scenario, k=k):
        for it in r.items:
            rows.append((r.user_id, r.scenario, it.rank, it.item_id, float(it.score),
                         None if it.retriever_score is None else float(it.retriever_score), r.fallback))  # fmt: skip
    return rows


def _chunks(users: Sequence[str], size: int) -> list[list[str]]:
    if not users:
        raise RagrecError("no users to score")
    return [list(users[i : i + size]) for i in range(0, len(users), size)]


def _frame(rows: list[tuple]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"user_id": "string", "scenario": "string", "rank": "int32", "item_id": "string",
                         "score": "float64", "retriever_score": "float64", "fallback": "string"})  # fmt: skip


class _Worker:
    """One recommender per Ray actor (see :func:`batch_recommend`)."""

    def __init__(self, path: str, overrides: dict[str, Any], threads: int) -> None:
        import torch

        from ragrec.inference import Recommender

        torch.set_num_threads(threads)
        self.rec = Recommender.from_pretrained(path, **overrides)

    def run(self, users: list[str], scenario: str | None, k: int) -> list[tuple]:
        return recommend_rows(self.rec, users, scenario=scenario, k=k)


def batch_recommend(
    path: str | PathLike[str],
    users: Sequence[str] | Literal["all"],
    out: str | PathLike[str],
    *,
    scenario: str | None = None,
    k: int = 10,
    engine: str = "local",
    workers: int = 2,
    address: str | None = None,
    chunk: int = 32,
    threads: int = 1,
    progress: bool = True,
    **overrides: Any,
) -> BatchReport:
    """Score ``users`` (``"all"``: every known user of the scenario) with the recommender saved at
    ``path`` and write ``out`` (Parquet, atomically). ``overrides`` change config fields (e.g.
    ``quantization="8bit"``). The local engine loads the recommender once, also for ``"all"``."""
    from tqdm.auto import tqdm

    if engine not in ENGINES:
        raise RagrecError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if chunk < 1 or workers < 1 or threads < 1 or k < 1:
        raise RagrecError("chunk, workers, threads and k must be >= 1")
    every = isinstance(users, str) and users == "all"
    chunks = [] if every else _chunks(users, chunk)  # an empty list fails before anything loads
    start = time.perf_counter()
    notes: list[str] = []
    if engine == "local":
        import torch

        from ragrec.inference import Recommender

        torch.set_num_threads(threads)
        rec = Recommender.from_pretrained(path, **overrides)
        sc = rec.scenario(scenario)  # an unknown scenario fails before any work
        chunks = chunks or _chunks(known_users(sc), chunk)
        parts = [recommend_rows(rec, c, scenario=scenario, k=k)
                 for c in tqdm(chunks, desc="users", unit="chunk", disable=not progress)]  # fmt: skip
        used = 1
    else:
        chunks = chunks or _chunks(read_users("all", path, scenario), chunk)
        parts, used = _run_ray(str(path), chunks, scenario, k, workers, address, threads, overrides, progress)
        notes.append(f"ray: {used} actors" + (f" on {address}" if address else " on this machine"))
    rows = [r for part in parts for r in part]
    frame = _frame(rows)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(out, buf.getvalue())
    seconds = time.perf_counter() - start
    return BatchReport(sum(map(len, chunks)), len(rows), len(chunks), engine, used, round(seconds, 3), str(out), notes)


def _run_ray(path, chunks, scenario, k, workers, address, threads, overrides, progress):
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise RagrecError("the ray engine needs Ray: pip install 'ragrec[ray]'") from None
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": workers * threads}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    try:
        actor = ray.remote(num_cpus=threads)(_Worker)
        pool = ActorPool([actor.remote(path, overrides, threads) for _ in range(workers)])
        results = pool.map(lambda a, c: a.run.remote(c, scenario, k), chunks)  # in chunk order
        parts = list(tqdm(results, total=len(chunks), desc="users", unit="chunk", disable=not progress))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), RagrecError) else None
        raise (cause or RagrecError(f"a Ray worker failed: {exc}")) from None
    finally:
        if started:
            ray.shutdown()
    return parts, workers
