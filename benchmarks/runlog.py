"""What every benchmark that computes a test figure records (docs/evaluation.md, "Test runs are logged").

* :func:`provenance`: the exact command, its arguments, the commit and the date, for a results JSON,
  so that running the command again reproduces the file.
* :func:`log_test_run`: appends one line per computed test figure set to
  ``benchmarks/results/test_runs.jsonl`` (date, commit, benchmark, recipe, config, figures) and
  returns how many test runs that recipe has had, for the report to say.

Per-user ranks are written by ``ragrec.eval.report.write_report`` beside every report
(``<name>_per_user.csv``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ragrec.io import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUN_LOG = RESULTS / "test_runs.jsonl"


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The commit the benchmark runs (cached at the first call: call :func:`started` when the run
    begins, so that commits made while it runs are not recorded as its code)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
                               cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def started() -> str:
    """Record the commit at the start of a run (see :func:`_commit`); returns it."""
    return _commit()


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The command that produced a results file (run it again to reproduce it) and its settings."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the repository keeps its path
        script = script.resolve().relative_to(HERE.parent)
    return {
        "command": shlex.join(["python", str(script), *sys.argv[1:]]),
        "config": config,
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
    }


def log_test_run(benchmark: str, recipe: str, config: dict[str, Any], figures: dict[str, float]) -> int:
    """Append a test run to the run log; returns the number of logged test runs of ``recipe``
    (this one included)."""
    entry = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit(), "benchmark": benchmark,
             "recipe": recipe, "config": config, "figures": {k: round(float(v), 6) for k, v in figures.items()}}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    old = RUN_LOG.read_text("utf-8") if RUN_LOG.is_file() else ""
    atomic_write_text(RUN_LOG, old + json.dumps(entry, sort_keys=True) + "\n")
    return test_runs(recipe)


def logged_runs(recipe: str) -> list[dict[str, Any]]:
    """The run log's entries for ``recipe``, oldest first."""
    if not RUN_LOG.is_file():
        return []
    entries = (json.loads(line) for line in RUN_LOG.read_text("utf-8").splitlines() if line.strip())
    return [e for e in entries if e.get("recipe") == recipe]


def test_runs(recipe: str) -> int:
    """How many test runs of ``recipe`` the run log holds."""
    return len(logged_runs(recipe))


def print_summary(rows, comparisons) -> None:
    """Each row's NDCG@10 and Recall@10, then each comparison's difference and CI, on stdout."""
    for r in rows:
        print(f"{r['system']}: N@10 {r['ndcg@10']:.4f} R@10 {r['recall@10']:.4f}")
    for name, cmp in comparisons:
        print(f"{name}: {cmp.difference:+.4f} [{cmp.low:+.4f}, {cmp.high:+.4f}]")
