"""The residual, retriever-anchored LLM stage on ML-100K or Amazon Video Games (docs/evaluation.md).

ML-100K: the RecBole split; ``--dataset games``: 6,000 sampled users, leave-one-out.

Trains the residual ranker (ragrec.finetune.residual: out-of-fold candidate lists, the fixed
retriever + item-priors fusion as the anchor, the LLM's letter log-probabilities as a learned
delta, cached lower layers, LoRA on the top layers), then scores every test user through the
served path and reports, on the same users:

* (a) the first stage alone (the scenario's default: recency EASE, l2/decay chosen on validation);
* (e) first stage + item priors, learned fusion without the LLM (fitted on validation);
* (h) the residual LLM stage as served (e + scale x LLM letter log-probability);
* (c') the fine-tuned LLM alone on its shuffled candidates; (g) item priors alone;

with paired bootstrap CIs for (h)-(e), (h)-(a), (c')-(g), training throughput, the out-of-fold
lists' candidate recall against the in-sample one, and the LLM's top-choice slot distribution.
Writes ``benchmarks/results/llm_stage.{json,md}``, ``llm_stage_recall.png``,
``llm_stage_per_user.csv``; the test figures go to ``results/test_runs.jsonl``.

    python benchmarks/llm_stage.py                      # the committed run (~45 min on a 2-core CPU)
    python benchmarks/llm_stage.py --dataset games --valid-users 2000   # -> results/llm_stage_games.*
    python benchmarks/llm_stage.py --examples 200 --epochs 1 --valid-users 60 --test-users 60 --out /tmp/x  # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import runlog
from rerank_stage import add_dataset_options, parse_dataset_args, slice_note
from runlog import log_test_run, print_summary, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE.parent / ".bench"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _prompt_tokens(rec, sc, lists) -> float:
    from ragrec.inference.rank import LetterRanker

    ranker = LetterRanker(rec.loaded, rec.template(sc, "rank"), budget=rec.budget)
    texts, _ = ranker.prompts([rec.history_items(sc, cl.history) for cl in lists],
                              [[sc.catalog[i] for i in cl.candidates] for cl in lists], sc.config.item_noun)  # fmt: skip
    return float(np.mean([len(rec.loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]))


def run(args) -> None:
    from rerank_stage import scenario_for

    from ragrec.eval.llm import llm_results, sample_users, score_llm, slot_bias, split_priors
    from ragrec.eval.protocol import beyond_context
    from ragrec.eval.report import compare, write_report
    from ragrec.finetune.residual import ResidualConfig, finetune_residual
    from ragrec.inference import load_model
    from ragrec.inference.recommender import Recommender, RecommenderConfig

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    sc, label = scenario_for(args)
    choice = sc.config.retriever_choice or {}
    _log(f"scenario: EASE l2 {choice.get('l2')} decay {choice.get('decay')} (chosen on valid)")
    loaded = load_model(args.model)
    compact = RecommenderConfig(model=args.model, max_history=args.max_history, max_item_chars=args.item_chars)
    rec = Recommender(loaded, [sc], compact)
    cfg = ResidualConfig(examples=args.examples, epochs=args.epochs, top_layers=args.top_layers,
                         valid_users=args.valid_users, max_minutes=args.max_minutes, seed=args.seed,
                         scale_init=args.scale_init, patience=args.patience)  # fmt: skip

    # (e) and (g) are fitted on validation inside the recipe (the anchor and the priors-only fusion)
    run_ = finetune_residual(rec, sc.name, cfg, args.work / f"{args.name}_adapter")
    result, fusion_e, fusion_g, oof = run_.result, run_.anchor, run_.priors_only, run_.out_of_fold
    names_e, names_g = fusion_e.names, fusion_g.names
    train_ex, render_seconds = run_.train_examples, run_.render_seconds_per_example
    out = result.adapter
    tokens = {"compact": float(np.mean([len(e.input_ids) for e in train_ex]))}
    default_rec = Recommender(loaded, [sc], RecommenderConfig(model=args.model))
    tokens["default_budget"] = _prompt_tokens(default_rec, sc, run_.train_lists[:200])
    _log(f"out-of-fold lists: {oof}; anchor fusion {fusion_e.weights}; prompt tokens {tokens}")
    _log(f"trained: {result.stop_reason}; scale {result.scale:.4f}; curve {result.curve}; timing {result.timing}")

    # serve: the adapter, the residual fusion and the shuffled order, through the Recommender
    served_cfg = sc.config.model_copy(update={"fusion": result.fusion, "candidate_order": "shuffled"})
    rec.scenarios[sc.name] = dataclasses.replace(sc, config=served_cfg, adapter=out)
    rec.adapter_names[sc.name] = "default"
    split = args.split  # "valid" while developing a recipe: nothing is logged as a test run
    priors_t = split_priors(sc, split)
    users = sample_users(sorted(sc.data.targets(split)), args.test_users, seed=cfg.seed)
    t0 = time.perf_counter()
    test = score_llm(rec, sc.name, split=split, users=users, retrieved_only=True)
    serve_seconds = (time.perf_counter() - t0) / max(1, int((test.target_pos >= 0).sum()))
    rows_h = test.fusion_rows(priors_t, result.fusion.names, result.fusion.max_history)
    served = [result.fusion.score(x) for x in rows_h]
    # the figures are the served path's: recommend() on some retrieved users gives the same lists
    check = [j for j, p in enumerate(test.target_pos) if p >= 0][:16]
    recs = rec.recommend_batch(histories=[test.histories[j] for j in check], k=10)
    recs = {test.users[j]: [i.item_id for i in r.items] for j, r in zip(check, recs)}
    check = [test.users[j] for j in check]
    lists_h = dict(zip(test.users, test.lists(served)))
    agree = sum(recs[u] == list(lists_h[u][:10]) for u in check)
    if agree != len(check):
        raise SystemExit(f"recommend() differs from the scored path for {len(check) - agree} of {len(check)} users")
    row_e = [fusion_e.score(x) for x in test.fusion_rows(priors_t, names_e)]
    row_g = [fusion_g.score(x) for x in test.fusion_rows(priors_t, names_g)]
    systems = {
        "(a) first stage: recency EASE, 20 candidates": None,
        "(e) first stage + item priors, learned fusion (no LLM)": row_e,
        "(h) residual LLM stage as served (e + scale x LLM)": served,
        (
            "(c') fine-tuned LLM alone, shuffled candidates"
            if result.best_step
            else "(c') LLM alone, shuffled candidates (kept state = step 0: the base model)"
        ): [np.asarray(s, dtype=float) for s in test.llm],
        "(g) item priors alone (no retriever, no LLM)": row_g,
    }
    results = llm_results(test, systems, beyond_context(sc.data, split))
    a, e, h, c, g = results
    comparisons = [("(h) - (e)", compare(h, e)), ("(h) - (a)", compare(h, a)), ("(c') - (g)", compare(c, g)),
                   ("(e) - (a)", compare(e, a))]  # fmt: skip
    rows = [{**r.row(), "candidate_recall@20": round(float(np.isfinite(r.ranks).mean()), 6)} for r in results]
    slices = cold_slices({r.system: r.ranks for r in results}, [sc.data.targets(split)[u] for u in a.users],
                         priors_t.popularity)  # fmt: skip
    bias = slot_bias(test)
    before = _before_seconds()
    timing = {**result.timing, "render_seconds_per_example": render_seconds, "serve_seconds_per_user": serve_seconds,
              "before_seconds_per_example": before}  # fmt: skip
    runs = 0 if split != "test" else log_test_run("llm_stage" if args.dataset == "ml-100k" else "llm_stage_games", f"llm_stage: residual retriever-anchored SmolLM2-135M over recency EASE, {label}",
                        provenance(config)["config"], {f"{r['system']} ndcg@10": r["ndcg@10"] for r in rows})  # fmt: skip
    ratio = h.metrics((10,))["ndcg@10"] / max(a.metrics((10,))["ndcg@10"], 1e-12)
    extra = {
        **provenance(config),
        "retriever": choice,
        "out_of_fold": oof,
        "training": {
            "examples": len(train_ex),
            "valid_users": run_.valid_users,
            "valid_retrieved": run_.valid_examples,
            "stop_reason": result.stop_reason,
            "best_step": result.best_step,
            "scale": result.scale,
            "curve": result.curve,
            "timing": timing,
            "prompt_tokens": tokens,
            "config": cfg.model_dump(),
        },  # fmt: skip
        "served_fusion": result.fusion.model_dump(),
        "fusion_without_llm": fusion_e.model_dump(),
        "priors_alone": fusion_g.model_dump(),
        "position_bias": bias.as_dict(),
        "ratio_h_over_a": round(ratio, 4),
        "slices": slices,
        "recommend_agrees": f"{agree}/{len(check)}",
        "per_user": f"{args.name}_per_user.csv",
    }
    notes = [
        f"docs/evaluation.md: {label}, history masked, two-stage (a target outside the 20 candidates is a "
        "miss), pessimistic ties. Fusions and early stopping on validation users only.",
        f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included). Command: `{extra['command']}`.",
        f"Training lists: out-of-fold recency EASE ({oof['folds']} folds), {oof['positions']} training positions, "
        f"{oof['lists_with_target']} hold their target (out-of-fold recall@20 {oof['oof_recall@20']}, in-sample "
        f"{oof['in_sample_recall@20']}); {len(train_ex)} sampled, shown in a fixed shuffle.",
        f"Served: (e)'s fusion + {result.scale:.4f} x the LLM's letter log-probability; {result.stop_reason}. "
        f"(h)/(a) NDCG@10 = {ratio:.3f}. recommend() gave the scored lists for {agree}/{len(check)} checked users.",
        f"Throughput: lower layers cached at {timing['cache_seconds_per_example']:.3f} s/example, top "
        f"{cfg.top_layers} layers trained at {timing['train_seconds_per_example']:.3f} s/example seen, prompts "
        f"{tokens['compact']:.0f} tokens (default budget {tokens['default_budget']:.0f})"
        + (f"; the earlier full-model recipe: {before:.2f} s/example" if before else "")
        + ".",
        slice_note(slices, SLICE_COMPARISONS),
        "Position bias of the fine-tuned LLM column, by the candidate's slot in the retriever's order (the LLM saw a "
        f"shuffle): {bias.summary()}.",
    ]
    where = Path(args.out) if args.out else RESULTS if split == "test" else args.work  # valid: development
    write_report(where / args.name, rows, title=f"Residual LLM stage, {label} ({split})", results=results,
                 comparisons=comparisons, notes=notes, extra=extra,
                 targets=[sc.data.targets(split)[u] for u in a.users])  # fmt: skip
    print_summary(rows, comparisons)


SLICE_COMPARISONS = ("(h) - (e)", "(h) - (a)", "(c') - (g)")


def cold_slices(ranks: dict[str, np.ndarray], targets, popularity) -> dict:
    """The report's rows on the users whose target is a cold-start item (fewer than
    ``rerank_stage.COLD`` interactions in the histories the models see) and on the others, with
    :data:`SLICE_COMPARISONS` there; ``ranks``: per-user target ranks by system, in the report's
    row order (a), (e), (h), (c'), (g)."""
    from rerank_stage import cold_targets, slice_figures

    a, e, h, c, g = ranks
    pairs = list(zip(SLICE_COMPARISONS, (h, h, c), (e, a, g)))
    cold = cold_targets(popularity, targets)
    return {"cold_target": slice_figures(ranks, cold, pairs), "warm_target": slice_figures(ranks, ~cold, pairs)}


def _before_seconds() -> float | None:
    """Seconds per training example seen (validations included) of the classic recipe's committed
    run (benchmarks/results/finetune.json: training seconds / (steps x grad_accum))."""
    path = RESULTS / "finetune.json"
    if not path.is_file():
        return None
    train = json.loads(path.read_text()).get("train", {})
    secs, steps, accum = train.get("train_seconds"), train.get("steps"), train.get("config", {}).get("grad_accum")
    return round(secs / (steps * accum), 3) if secs and steps and accum else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--examples", type=int, default=3000)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--top-layers", type=int, default=4)
    p.add_argument("--valid-users", type=int, default=300)
    p.add_argument("--test-users", type=int, default=None, help="test users scored (default: all)")
    p.add_argument("--max-history", type=int, default=12)
    p.add_argument("--item-chars", type=int, default=60)
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--scale-init", type=float, default=0.0, help="the LLM's scale when training starts")
    p.add_argument("--patience", type=int, default=4, help="validations without gain before stopping")
    p.add_argument("--work", type=Path, default=WORK, help="adapters; validation reports when --out is not given")
    add_dataset_options(p, "llm_stage")  # --dataset, --users, --seed, --split, --name, --out
    args = parse_dataset_args(p, argv)
    runlog.started()
    args.work.mkdir(parents=True, exist_ok=True)
    run(args)


if __name__ == "__main__":
    main()
