"""Throughput of ``ragrec serve`` under concurrent rank requests, with and without micro-batching.

The service runs in this process on 127.0.0.1 (uvicorn, a free port; nothing else is reached);
``--clients`` concurrent clients send ``--requests`` rank requests in all (``GET
/recommend/{user}``, known ML-100K users drawn with a fixed seed, the same users in both runs),
first with micro-batching on, then off (one model call per request, the others waiting: what a
server without batching does). Every request runs the LLM: the scenario is the default model
(SmolLM2-135M-Instruct, zero-shot) ranking recency EASE's 20 candidates, without a second-stage
reranker (which would skip the LLM). Reported per mode: errors, p50 / p95 latency, requests/s,
mean batch size (from the service's own /metrics), and the throughput ratio. Bounded: stops by
itself after the requests, or after ``--max-seconds`` per mode (then marked incomplete).

    python benchmarks/serve.py                        # ~10 min on 2 CPU cores
    python benchmarks/serve.py --recommender PATH     # a saved recommender instead of building one

Writes ``benchmarks/results/serve.json`` and ``serve.md`` (no test-split figure is computed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from runlog import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_recommender(path: Path | None, candidates: int, batch_size: int = 8):
    from ragrec.inference import Recommender, RecommenderConfig

    if path is not None:
        rec = Recommender.from_pretrained(path, candidates=candidates, batch_size=batch_size)
    else:
        from ragrec.data import pull
        from ragrec.pipeline import build_scenario

        data = pull("ml-100k").data
        scenario = build_scenario(data, "movies", item_noun="movie", encoder="ease", text=False, progress=False)
        from ragrec.inference import load_model

        config = RecommenderConfig(candidates=candidates, batch_size=batch_size)
        rec = Recommender(load_model(config.model, device="cpu"), [scenario], config)
    for sc in rec.scenarios.values():  # every request must run the LLM
        sc.reranker = None
        sc.config = sc.config.model_copy(update={"fusion": None})
    return rec


async def load(url: str, users: list[str], clients: int, n: int, max_seconds: float) -> dict:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for u in users:
        queue.put_nowait(u)
    latencies, errors = [], []
    deadline = time.perf_counter() + max_seconds

    async def client(c: httpx.AsyncClient) -> None:
        while not queue.empty() and time.perf_counter() < deadline:
            user = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await c.get(f"/recommend/{user}", params={"n": n})
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - start)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - start
        metrics = (await c.get("/metrics")).text
    batch = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines()
             if ln.startswith(("ragrec_batch_size_sum", "ragrec_batch_size_count"))}  # fmt: skip
    done = len(latencies)
    return {
        "requests": len(users),
        "completed": done,
        "errors": len(errors),
        "error_examples": errors[:3],
        "complete": done + len(errors) == len(users),
        "wall_s": round(wall, 2),
        "requests_per_s": round(done / wall, 3) if wall else 0.0,
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "model_calls": int(batch.get("ragrec_batch_size_count", 0)),
        "mean_batch": round(batch["ragrec_batch_size_sum"] / batch["ragrec_batch_size_count"], 2)
        if batch.get("ragrec_batch_size_count")
        else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recommender", type=Path, help="A saved recommender (default: build ML-100K + SmolLM2).")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--n", type=int, default=10, help="List length per request.")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=16, help="Most requests per model call (micro-batching).")
    ap.add_argument("--llm-batch-size", type=int, default=8, help="Prompts per forward pass (RecommenderConfig).")
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="Per mode.")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve")
    args = ap.parse_args(argv)

    import torch

    from ragrec.serve import ServeSettings, create_app, serve_in_background

    _log("building the recommender")
    rec = build_recommender(args.recommender, args.candidates, args.llm_batch_size)
    sc = rec.scenario()
    users = list(np.random.default_rng(0).choice(sorted(sc.histories), size=args.requests, replace=True))
    rec.recommend(users[0], k=args.n)  # warm up (first-call allocations, tokenizer caches)
    runs = {}
    for batching in (True, False):
        mode = "micro-batching" if batching else "one request per model call"
        settings = ServeSettings(micro_batching=batching, max_batch=args.max_batch, batch_window_ms=args.window_ms,
                                 request_timeout_s=args.max_seconds)  # fmt: skip
        app = create_app(rec, settings)
        _log(f"{mode}: {args.requests} requests from {args.clients} clients")
        with serve_in_background(app) as url:
            runs[mode] = asyncio.run(load(url, users, args.clients, args.n, args.max_seconds))
        _log(f"{mode}: {json.dumps(runs[mode])}")
    on, off = runs["micro-batching"], runs["one request per model call"]
    ratio = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else float("nan")
    out = {
        **provenance(
            vars(args) | {"recommender": str(args.recommender) if args.recommender else None, "out": str(args.out)}
        ),  # fmt: skip
        "model": rec.loaded.source,
        "scenario": sc.name,
        "llm_batch_size": rec.config.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "throughput_ratio": round(ratio, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    lines = [
        "# ragrec serve: concurrent rank requests",
        "",
        f"`{out['command']}` (commit {out['commit']}, {out['date']}): model {out['model']}, zero-shot, "
        f"{args.candidates} candidates per request (recency EASE), {args.clients} concurrent clients, "
        f"{args.requests} requests, loopback; {out['cpu_count']} CPU cores, {out['torch_threads']} torch threads; "
        f"the LLM scores {rec.config.batch_size} prompts per forward pass.",
        "",
        "| mode | errors | p50 s | p95 s | requests/s | model calls | mean batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in runs.items():
        flag = "" if r["complete"] else " (incomplete: time bound)"
        lines.append(f"| {mode}{flag} | {r['errors']} | {r['p50_s']} | {r['p95_s']} | {r['requests_per_s']} | "
                     f"{r['model_calls']} | {r['mean_batch']} |")  # fmt: skip
    lines += ["", f"Throughput ratio (micro-batching / one per call): **{ratio:.2f}x**.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines), "utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
