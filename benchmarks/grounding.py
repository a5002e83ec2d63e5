"""How often the default LM's explanations fail grounding on ML-100K, and why.

For sampled test users, the recommender explains the user's held-out test item (history: train +
valid) and keeps the grounding verdict: items named outside the history (``outside``), quoted
titles not in the catalog (``unknown``), and categories or years that neither the explained item
nor the items the text names have (``unsupported``, the attribute check). Writes
``benchmarks/results/grounding.{json,md}`` with the rates and flagged examples to read.

    python benchmarks/grounding.py --users 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llm_rank  # noqa: E402  (same folder: the ML-100K scenario)
import runlog  # noqa: E402
from runlog import log_test_run, provenance  # noqa: E402

RESULTS = HERE / "results"


def run(users: int, model: str, adapter: Path | None, out: Path) -> dict:
    from ragrec import schema as S
    from ragrec.eval.llm import sample_users
    from ragrec.eval.report import write_report
    from ragrec.inference import Recommender, RecommenderConfig, load_model

    sc = llm_rank._scenario()
    sc.adapter = adapter
    rec = Recommender(load_model(model), [sc], RecommenderConfig(model=model))
    targets = sc.data.targets(S.TEST)
    picked = sample_users(list(targets), users, seed=0)
    rows, t0 = [], time.perf_counter()
    for n, u in enumerate(picked, 1):
        ex = rec.explain(targets[u], user_id=u)
        g = ex.grounding
        rows.append({"user": u, "item": targets[u], "title": sc.item(targets[u]).title, "text": ex.model_text,
                     "outside": list(g.outside), "unknown": list(g.unknown), "unsupported": list(g.unsupported)})  # fmt: skip
        if n % 10 == 0:
            print(f"[{time.strftime('%H:%M:%S')}] {n}/{len(picked)} explanations", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0

    def rate(*keys: str) -> float:
        return sum(not any(r[k] for k in keys) for r in rows) / len(rows)

    checks = {"titles only (outside the history, unknown quoted titles)": ("outside", "unknown"),
              "attributes only (categories, years, decades)": ("unsupported",),
              "all (what the recommender enforces)": ("outside", "unknown", "unsupported")}  # fmt: skip
    summary = [{"dataset": "ml-100k", "system": name, "split": "test", "grounded_rate": round(rate(*keys), 4),
                "users": len(rows)} for name, keys in checks.items()]  # fmt: skip
    flagged = [r for r in rows if r["unsupported"]][:12]
    notes = [
        f"{len(rows)} ML-100K test users (sampled, seed 0), model {model}"
        + (f" + adapter {adapter}" if adapter else "")
        + f", {secs / len(rows):.1f} s per explanation on this machine.",
        "Flagged examples (model text, the attributes no explained or named item has):",
        *[f'`{r["title"]}`: "{r["text"][:240]}" -> {r["unsupported"]}' for r in flagged],
    ]
    runs = log_test_run("grounding", f"grounding: explanations of {model}" + (" + adapter" if adapter else ""),
                        {"users": users, "model": model, "adapter": str(adapter) if adapter else None},
                        {r["system"]: r["grounded_rate"] for r in summary})  # fmt: skip
    notes.append(f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included; runs before "
                 "2026-12-02 were not logged). Per-user results: `explanations` in the JSON.")  # fmt: skip
    write_report(out, summary, title="Grounding of zero-shot explanations, ML-100K (test)", notes=notes,
                 extra={**provenance({"users": users, "model": model, "adapter": str(adapter) if adapter else None}),
                        "explanations": rows, "seconds_per_explanation": secs / len(rows)},
                 keys=("grounded_rate", "users"))  # fmt: skip
    print(json.dumps(summary, indent=2))
    return {"summary": summary}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=40, help="test users explained (40: the committed run)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "grounding")
    args = p.parse_args(argv)
    runlog.started()  # the commit this run's code is from
    run(args.users, args.model, args.adapter, args.out)


if __name__ == "__main__":
    main()
