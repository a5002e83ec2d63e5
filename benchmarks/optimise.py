"""Accuracy against diversity and coverage: the final list re-ordered by MMR, a popularity penalty,
calibration toward the user's category mix, and category caps.

For every evaluated user the scenario's first stage (recency EASE, l2/decay chosen on validation)
retrieves 20 candidates; the list is then re-ordered exactly as ``Recommender.recommend`` does with
``diversity=λ`` (:func:`ragrec.inference.optimise.mmr` over the retriever's item embeddings),
``long_tail=w`` (:func:`~ragrec.inference.optimise.long_tail`), ``calibration=w``
(:func:`~ragrec.inference.optimise.calibrated`) or ``ListRules(max_per_category=m)``
(:func:`~ragrec.inference.optimise.capped`). Each setting is
reported with NDCG@10, Recall@10, catalog coverage@10, intra-list diversity@10 and novelty@10 on
the same users, with paired CIs against λ = 0, and a plot of accuracy against diversity (the curve a
product owner picks a point from). Writes ``benchmarks/results/<name>.{json,md}``,
``<name>_tradeoff.png`` and ``<name>_per_user.csv``; test figures go to ``results/test_runs.jsonl``.

    python benchmarks/optimise.py                  # ML-100K, all 943 test users (~2 min)
    python benchmarks/optimise.py --dataset games  # Amazon Video Games, 6,000 sampled users
    python benchmarks/optimise.py --split valid --out /tmp/x
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import runlog
from runlog import log_test_run, print_summary, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
WEIGHTS = (0.1, 0.3, 0.5, 0.7)  # long tail and calibration
CAPS = (1, 2)
FAMILIES = {"MMR": "MMR, λ", "long tail": "popularity penalty, w", "calibration": "calibration, w"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _tradeoff_plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ragrec.eval.report import png_bytes

    labels = {"diversity@10": "intra-list diversity@10", "coverage@10": "catalog coverage@10",
              "novelty@10": "novelty@10 (bits)"}  # fmt: skip
    panels = [k for k in labels if k in rows[0]][:2]  # diversity needs item categories; novelty stands in
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    base = rows[0]  # λ = 0: the start of every curve
    for ax, key in zip(axes[0], panels):
        label = labels[key]
        for family, legend in FAMILIES.items():
            curve = [base] + [r for r in rows[1:] if r["system"].startswith(family)]
            if len(curve) == 1:
                continue
            ax.plot([r[key] for r in curve], [r["ndcg@10"] for r in curve], "o-", label=legend)
            for r in curve[1:]:
                ax.annotate(r["system"].split("=")[1], (r[key], r["ndcg@10"]), fontsize=7)
        for r in rows:
            if r["system"].startswith("cap"):
                ax.plot(r[key], r["ndcg@10"], "s", label=r["system"])
        ax.set_xlabel(label)
        ax.set_ylabel("NDCG@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def run(args) -> None:
    from rerank_stage import scenario_for

    from ragrec import schema as S
    from ragrec.eval.llm import LLMScores, llm_results
    from ragrec.eval.protocol import beyond_context
    from ragrec.eval.report import compare, write_report
    from ragrec.finetune.residual import serving_lists
    from ragrec.inference.optimise import calibrated, capped, category_mix, long_tail, mmr

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    sc, label = scenario_for(args)
    lists = serving_lists(sc, args.split, None, args.candidates)
    _log(f"{label}: {len(lists)} {args.split} users")
    vectors = {cl.user_id: sc.item_vectors(cl.candidates) for cl in lists}  # as recommend() reads them
    popularity = {cl.user_id: [sc.priors.popularity.get(i, 0) for i in cl.candidates] for cl in lists}
    history = sc.data.histories(splits=(S.TRAIN,) if args.split == S.VALID else (S.TRAIN, S.VALID))
    mixes = {cl.user_id: category_mix([sc.catalog[i].categories for i in history[cl.user_id].item_ids])
             for cl in lists}  # fmt: skip

    def as_scores(order: list[int], n: int) -> np.ndarray:
        """Scores that sort the candidates in ``order``, the ones it leaves out after it (retriever order)."""
        picked = set(order)
        full = list(order) + [j for j in range(n) if j not in picked]
        s = np.zeros(n)
        s[np.asarray(full, dtype=int)] = np.arange(n, 0, -1, dtype=float)
        return s

    systems: dict[str, list[np.ndarray]] = {}
    for lam in LAMBDAS:
        systems[f"MMR λ={lam:g}"] = [
            as_scores(mmr(cl.retriever, vectors[cl.user_id], len(cl.candidates), lam), len(cl.candidates))
            for cl in lists
        ]
    for w in WEIGHTS:
        systems[f"long tail w={w:g}"] = [long_tail(cl.retriever, popularity[cl.user_id], w) for cl in lists]
    has_categories = any(sc.catalog[i].categories for cl in lists for i in cl.candidates)
    for w in WEIGHTS if has_categories else ():  # without categories calibration and caps change nothing
        systems[f"calibration w={w:g}"] = [
            as_scores(calibrated(cl.retriever, [sc.catalog[i].categories for i in cl.candidates], mixes[cl.user_id],
                                 len(cl.candidates), w), len(cl.candidates))
            for cl in lists
        ]  # fmt: skip
    for cap in CAPS if has_categories else ():
        systems[f"cap {cap} per category"] = [
            as_scores(capped(list(np.argsort(-cl.retriever, kind="stable")),
                             [sc.catalog[i].categories for i in cl.candidates], cap, 10), len(cl.candidates))
            for cl in lists
        ]  # fmt: skip
    scores = LLMScores.without_llm(sc.data.name, args.split, lists)
    results = llm_results(scores, systems, beyond_context(sc.data, args.split))
    base = results[0]
    comparisons = [(f"{r.system} - λ=0", compare(r, base)) for r in results[1:]]
    rows = [r.row() for r in results]
    runs = 0
    if args.split == S.TEST:
        runs = log_test_run(args.name, f"optimise: MMR / long tail / calibration / category caps over the first stage's candidates, {label}",
                            provenance(config)["config"], {f"{r['system']} ndcg@10": r["ndcg@10"] for r in rows})  # fmt: skip
        runs += runlog.test_runs(
            f"optimise: MMR / category caps over recency EASE's 20 candidates, {label}"
        )  # before long tail / calibration
    extra = {**provenance(config), "per_user": f"{args.name}_per_user.csv"}
    notes = [
        f"{label}; docs/evaluation.md protocol (history masked, two-stage over the first stage's {args.candidates} "
        "candidates, pessimistic ties). The lists are re-ordered with the same functions recommend() uses.",
        f"Test runs of this benchmark in results/test_runs.jsonl: {runs}. Command: `{extra['command']}`.",
        "diversity@10: mean pairwise 1 - Jaccard of the items' categories; coverage@10: share of the catalog "
        "recommended to anyone; novelty@10: mean self-information in bits.",
        *(
            []
            if has_categories
            else [
                "The items have no categories here: calibration and category caps would change "
                "nothing, so they are not run; diversity@10 needs categories too."
            ]
        ),
        "With a category cap, recommend() returns only the items the cap allows (possibly fewer than 10); here the "
        "candidates it leaves out follow in the retriever's order, so every list has 10 items and the rows compare.",
    ]
    where = Path(args.out) if args.out else RESULTS
    keys = ("users", "ndcg@10", "recall@10", "coverage@10", "diversity@10", "novelty@10", "tail@10")
    write_report(where / args.name, rows, title=f"Accuracy against diversity and coverage, {label} ({args.split})",
                 results=results, comparisons=comparisons, notes=notes, extra=extra, keys=keys,
                 figures={"tradeoff": _tradeoff_plot(rows)},
                 targets=[sc.data.targets(args.split)[u] for u in base.users])  # fmt: skip
    print_summary(rows, comparisons)


def main(argv: list[str] | None = None) -> None:
    from rerank_stage import add_dataset_options, parse_dataset_args

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_options(p, "optimise")
    p.add_argument("--candidates", type=int, default=20)
    args = parse_dataset_args(p, argv)
    runlog.started()
    run(args)


if __name__ == "__main__":
    main()
