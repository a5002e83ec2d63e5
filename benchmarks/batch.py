"""Throughput of ``ragrec batch-recommend``: the local engine against Ray with 2 workers.

ML-100K (recency EASE, 20 candidates, SmolLM2-135M zero-shot ranking every user: the LLM runs for
each), ``--users`` known users drawn with a fixed seed, the same for every engine. Reported per
engine: seconds, users/s, and whether the outputs agree (same items in the same order for every
user; largest score difference). No test-split figure is computed.

    python benchmarks/batch.py                    # ~10 min on 2 CPU cores
    python benchmarks/batch.py --users 512 --workers 2

Writes ``benchmarks/results/batch.json`` and ``batch.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from runlog import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--out", type=Path, default=RESULTS / "batch")
    args = ap.parse_args(argv)

    import pandas as pd

    from ragrec.batch import batch_recommend
    from ragrec.data import pull
    from ragrec.inference import Recommender, RecommenderConfig, load_model
    from ragrec.pipeline import build_scenario

    _log("building the recommender")
    data = pull("ml-100k").data
    scenario = build_scenario(data, "movies", item_noun="movie", encoder="ease", text=False, progress=False)
    config = RecommenderConfig(candidates=20, batch_size=2, device="cpu")
    rec = Recommender(load_model(config.model, device="cpu"), [scenario], config)
    users = sorted(np.random.default_rng(0).choice(sorted(scenario.histories), size=args.users, replace=False))
    runs, frames = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        path = rec.save_pretrained(Path(tmp) / "rec")
        del rec
        for engine, workers, threads in (("local", 1, os.cpu_count() or 1), ("ray", args.workers, 1)):
            label = f"{engine} ({workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''})"
            _log(f"{label}: {len(users)} users")
            out = Path(tmp) / f"{engine}.parquet"
            rep = batch_recommend(path, users, out, k=10, engine=engine, workers=workers, chunk=args.chunk,
                                  threads=threads, progress=False)  # fmt: skip
            frames[label] = pd.read_parquet(out)
            runs[label] = {"seconds": rep.seconds, "users_per_s": round(rep.users_per_second, 3), "rows": rep.rows}
            _log(f"{label}: {json.dumps(runs[label])}")
    (a, fa), (b, fb) = frames.items()
    same = fa[["user_id", "rank", "item_id"]].equals(fb[["user_id", "rank", "item_id"]])
    diff = float((fa.score - fb.score).abs().max())
    ratio = runs[b]["users_per_s"] / runs[a]["users_per_s"]
    result = {**provenance(vars(args) | {"out": str(args.out)}), "model": config.model, "cpu_count": os.cpu_count(),
              "runs": runs, "same_items_in_same_order": bool(same), "max_score_difference": diff,
              "ray_over_local": round(ratio, 3)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    lines = ["# ragrec batch-recommend: local vs Ray", "",
             f"`{result['command']}` (commit {result['commit']}, {result['date']}): ML-100K, {len(users)} users, "
             f"SmolLM2-135M zero-shot over recency EASE's 20 candidates, k = 10, chunks of {args.chunk} users; "
             f"{result['cpu_count']} CPU cores.", "",
             "| engine | seconds | users/s |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {r['seconds']} | {r['users_per_s']} |" for name, r in runs.items()]
    lines += ["", f"Same items in the same order for every user: {same}; largest score difference {diff:.2e}. "
              f"Ray / local throughput: {ratio:.2f}x.", ""]  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines), "utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
