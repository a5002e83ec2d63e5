"""Readable evaluation reports: a JSON file of rows, a Markdown table and a Recall@K plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.eval.metrics import BootstrapResult, paired_bootstrap, per_user, recall_at
from ragrec.eval.protocol import EvalResult
from ragrec.io import atomic_write_bytes, atomic_write_text

__all__ = ["compare", "write_report", "recall_curve", "markdown_table", "write_per_user", "read_per_user"]

TABLE_KEYS = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20")
# The second table of a report, where rows carry them (docs/evaluation.md defines each).
MORE_KEYS = ("precision@10", "f1@10", "map@10", "coverage@10", "novelty@10", "diversity@10", "arp@10", "tail@10")


def recall_curve(ranks: np.ndarray, max_k: int = 50) -> np.ndarray:
    """Mean Recall@K over users for K = 1..max_k (several targets per user: hits / targets)."""
    ranks = np.asarray(ranks)
    return np.array([recall_at(ranks, k).mean() if len(ranks) else 0.0 for k in range(1, max_k + 1)])


def _rank_cell(x) -> str:
    arr = np.atleast_1d(np.asarray(x, dtype=float))
    return ";".join("inf" if np.isinf(v) else f"{v:g}" for v in arr if v == v)


def write_per_user(
    path: str | PathLike[str], results: Sequence[EvalResult], targets: Sequence[Any] | None = None
) -> Path:
    """The per-user ranks behind a report, as CSV, so that its confidence intervals can be
    recomputed without re-running any model: one row per user (``user_id``, optional ``target``,
    one column per system; ``inf`` = a miss, several targets joined by ``;``) when every result
    has the same users, else one row per (system, user)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    same = all(r.users == results[0].users for r in results)
    if same:
        users = results[0].users
        writer.writerow(["user_id", *(["target"] if targets is not None else []), *(r.system for r in results)])
        for j, u in enumerate(users):
            t = (
                []
                if targets is None
                else [";".join(targets[j]) if isinstance(targets[j], (tuple, list)) else targets[j]]
            )
            writer.writerow([u, *t, *(_rank_cell(r.ranks[j]) for r in results)])
    else:
        writer.writerow(["system", "user_id", "rank"])
        for r in results:
            writer.writerows([r.system, u, _rank_cell(x)] for u, x in zip(r.users, r.ranks))
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path


def read_per_user(path: str | PathLike[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Users and per-system ranks (one target per user) of a wide :func:`write_per_user` file."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    first = 2 if len(header) > 1 and header[1] == "target" else 1
    return [r[0] for r in body], {name: np.array([float(r[first + k]) for r in body])
                                  for k, name in enumerate(header[first:])}  # fmt: skip


def compare(a: EvalResult, b: EvalResult, metric: str = "ndcg@10", **kwargs: Any) -> BootstrapResult:
    """Paired bootstrap of ``a - b`` over the users both were evaluated on."""
    if a.users != b.users:
        common = sorted(set(a.users) & set(b.users))
        ia = {u: i for i, u in enumerate(a.users)}
        ib = {u: i for i, u in enumerate(b.users)}
        ra, rb = a.ranks[[ia[u] for u in common]], b.ranks[[ib[u] for u in common]]
    else:
        ra, rb = a.ranks, b.ranks
    return paired_bootstrap(per_user(ra, metric), per_user(rb, metric), metric=metric, **kwargs)


def markdown_table(rows: Sequence[dict[str, Any]], keys: Sequence[str] = TABLE_KEYS) -> str:
    head = "| dataset | system | split | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (3 + len(keys))]
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append(
            f"| {r.get('dataset', '')} | {r.get('system', '')} | {r.get('split', '')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def write_report(
    path: str | PathLike[str],
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    results: Sequence[EvalResult] = (),
    comparisons: Sequence[tuple[str, BootstrapResult]] = (),
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    keys: Sequence[str] = TABLE_KEYS,
    figures: dict[str, bytes] | None = None,
    targets: Sequence[Any] | None = None,
) -> dict[str, Path]:
    """Write ``<path>.json`` (rows + comparisons + extra), ``<path>.md`` (a table of ``keys``)
    and, with ``results``, ``<path>_recall.png`` (Recall@K curves) and ``<path>_per_user.csv``
    (every system's rank of each user's target, with ``targets`` when given:
    :func:`write_per_user`); each of ``figures`` (name -> PNG bytes) goes to
    ``<path>_<name>.png``. Returns the written paths."""
    stem = Path(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    payload = {
        "title": title,
        "rows": list(rows),
        "comparisons": [{"name": name, **vars(c)} for name, c in comparisons],
        **(extra or {}),
    }
    atomic_write_text(stem.with_suffix(".json"), json.dumps(payload, indent=2, default=float) + "\n")
    written["json"] = stem.with_suffix(".json")
    md = [f"# {title}", "", markdown_table(rows, keys), ""]
    more = [k for k in MORE_KEYS if k not in keys and any(k in r for r in rows)]
    if more:
        md += ["More metrics (precision, F1, MAP; beyond accuracy: catalog coverage, novelty in bits, "
               "intra-list diversity, average recommendation popularity, long-tail share):", "",
               markdown_table(rows, more), ""]  # fmt: skip
    if comparisons:
        md += ["## Paired bootstrap (95% CI of the difference, 1,000 resamples over users)", ""]
        md += ["| comparison | metric | difference | 95% CI | significant |", "|---|---|---|---|---|"]
        for name, c in comparisons:
            md.append(
                f"| {name} | {c.metric} | {c.difference:+.4f} | [{c.low:+.4f}, {c.high:+.4f}] | {'yes' if c.significant else 'no'} |"
            )
        md.append("")
    if results:
        written["per_user"] = write_per_user(stem.parent / f"{stem.name}_per_user.csv", results, targets)
        md += [f"Per-user ranks of every row: `{written['per_user'].name}`.", ""]
        png = stem.parent / f"{stem.name}_recall.png"
        atomic_write_bytes(png, _plot(results))
        written["png"] = png
        md += [f"![Recall@K]({png.name})", ""]
    for name, data in (figures or {}).items():
        png = stem.parent / f"{stem.name}_{name}.png"
        atomic_write_bytes(png, data)
        written[name] = png
        md += [f"![{name}]({png.name})", ""]
    md += [f"- {n}" for n in notes]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md).rstrip() + "\n")
    written["md"] = stem.with_suffix(".md")
    return written


def _plot(results: Sequence[EvalResult], max_k: int = 50) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for r in (r for r in results if r.dataset == ds):
            ax.plot(range(1, max_k + 1), recall_curve(r.ranks, max_k), label=r.system)
        ax.set_title(f"{ds} ({results[0].split}, history masked)")
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
