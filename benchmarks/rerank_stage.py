"""The learning-to-rank second stage, with and without the LLM's features (ragrec.finetune.ltr).

Fits the reranker of ``ragrec.finetune.ltr`` (out-of-fold candidate lists; LightGBM lambdarank
over the first stage's score, item priors, transitions and, in one of the two models, the LLM's
title similarity in its hidden states; early stopping and the served choice on validation), then
scores every test user and reports, on the same users:

* (a) the first stage alone (the scenario's default: recency EASE, l2/decay chosen on validation);
* (e) first stage + item priors, learned fusion without the LLM (fitted on validation);
* (l-) the reranker without the LLM's features;
* (l) the reranker with the LLM's features;
* (c') the LLM alone: each candidate's title similarity to the recent history in the LLM's hidden states;
* (g) item priors alone;

with paired bootstrap CIs for (l)-(l-) (the LLM features' share), (l)-(e), (l)-(a), (l-)-(e), (c')-(g), and
which of (e)/(l-)/(l) validation chose to serve; the served one is checked against
``Recommender.recommend``. Writes ``benchmarks/results/<name>.{json,md}``, ``<name>_recall.png``
and ``<name>_per_user.csv``; the test figures go to ``results/test_runs.jsonl``.

    python benchmarks/rerank_stage.py                          # ML-100K (RecBole split), ~10 min on 2 cores
    python benchmarks/rerank_stage.py --dataset games          # Amazon Video Games, 6,000 sampled users
    python benchmarks/rerank_stage.py --split valid --out /tmp/x  # develop on validation: nothing logged
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import runlog
from runlog import log_test_run, print_summary, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GAMES = HERE.parents[1] / "shared" / "data" / "amazon-videogames-llmrank" / "Games.test.inter"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def games_data(users: int, seed: int = 0):
    """Amazon Video Games (LLMRank's processing): ``users`` users sampled, leave-one-out split."""
    from ragrec import schema as S
    from ragrec.data import InteractionData, load_raw
    from ragrec.data.split import leave_one_out

    data = load_raw("recbole", GAMES, name="games")
    frame = data.interactions_frame()
    every = sorted(frame[S.USER_ID].unique())
    keep = set(np.random.default_rng(seed).choice(every, size=min(users, len(every)), replace=False).tolist())
    frame = frame[frame[S.USER_ID].isin(keep)]
    items = data.items_frame()
    items = items[items[S.ITEM_ID].isin(set(frame[S.ITEM_ID]))]  # the sampled users' catalog
    return leave_one_out(InteractionData.from_frames(f"games-{len(keep)}", frame, items))


def games_scenario(users: int, seed: int = 0):
    """:func:`games_data` as a scenario (recency EASE chosen on validation, no text retriever)."""
    from ragrec.pipeline import build_scenario

    return build_scenario(games_data(users, seed), "games", item_noun="game", text=False)


def scenario_for(args):
    """The scenario ``--dataset`` names (see :func:`add_dataset_options`) and its label for reports."""
    if args.dataset == "ml-100k":
        from llm_rank import _scenario

        return _scenario(), "ML-100K (RecBole split)"
    return games_scenario(args.users, args.seed), f"Amazon Video Games ({args.users} sampled users)"


def add_dataset_options(p: argparse.ArgumentParser, name: str) -> None:
    """``--dataset``, ``--users``, ``--seed``, ``--split``, ``--name`` (default ``name`` or
    ``name_games``) and ``--out``: the options this benchmark and optimise.py share."""
    p.add_argument("--dataset", choices=["ml-100k", "games"], default="ml-100k")
    p.add_argument("--users", type=int, default=6000, help="games: users sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["valid", "test"], default="test",
                   help="evaluate on validation users (development; nothing logged) or test")  # fmt: skip
    p.add_argument("--name", default=None, help=f"results/<name>.{{json,md}} (default: {name}[_games])")
    p.add_argument("--out", default=None, help="write the report here instead of benchmarks/results")
    p.set_defaults(default_name=name)


def parse_dataset_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.name = args.name or (args.default_name if args.dataset == "ml-100k" else f"{args.default_name}_games")
    del args.default_name
    return args


COLD = 5  # a target with fewer interactions than this in the known histories is a cold-start target


def cold_targets(counts, targets) -> np.ndarray:
    """Which ``targets`` are cold-start: fewer than ``COLD`` interactions in ``counts`` (the item
    priors' popularity over the histories the models see)."""
    return np.array([counts.get(t, 0) < COLD for t in targets], dtype=bool)


def slice_figures(ranks: dict[str, np.ndarray], mask: np.ndarray, pairs: Sequence[tuple[str, str, str]]) -> dict:
    """Users, NDCG@10 and candidate recall of each system (``ranks``: per-user target ranks by system
    name) on the users in ``mask``, and the paired bootstrap CI of each ``(label, x, y)`` in ``pairs``
    (x - y) there."""
    from ragrec.eval.metrics import paired_bootstrap, per_user

    out = {"users": int(mask.sum()), "ndcg@10": {}, "candidate_recall@20": {}}
    for system, r in ranks.items():
        out["ndcg@10"][system] = round(float(per_user(r[mask], "ndcg@10").mean()), 6) if mask.any() else None
        out["candidate_recall@20"][system] = round(float(np.isfinite(r[mask]).mean()), 6) if mask.any() else None
    for label, x, y in pairs:
        if mask.sum() > 1:
            b = paired_bootstrap(per_user(ranks[x][mask], "ndcg@10"), per_user(ranks[y][mask], "ndcg@10"))
            out[label] = f"{b.difference:+.4f} [{b.low:+.4f}, {b.high:+.4f}]"
    return out


def slice_note(slices: dict, comparisons: Sequence[str], warm: bool = True) -> str:
    """The report line of :func:`slice_figures`' cold and warm slices: NDCG@10 per system (by its
    label's "(x)" prefix) and the ``comparisons`` named, on the cold slice; with ``warm``, the
    other users' NDCG@10 too."""

    def ndcg(part: dict) -> str:
        return ", ".join(f"{k.split(')')[0]}) {v:.4f}" for k, v in part["ndcg@10"].items() if v is not None)

    cold = slices["cold_target"]
    text = (f"Cold-start slice (targets with fewer than {COLD} interactions in the histories the models see): "
            f"{cold['users']} users; NDCG@10 {ndcg(cold)}; "
            + "; ".join(f"{k} {cold[k]}" for k in comparisons if k in cold) + ".")  # fmt: skip
    if warm:
        text += f" The other {slices['warm_target']['users']} users: NDCG@10 {ndcg(slices['warm_target'])}."
    return text


def run(args) -> None:
    from ragrec.eval.llm import LLMScores, llm_results, split_priors
    from ragrec.eval.protocol import beyond_context
    from ragrec.eval.report import compare, write_report
    from ragrec.finetune.config import RerankerConfig
    from ragrec.finetune.ltr import fit_reranker
    from ragrec.finetune.residual import serving_lists
    from ragrec.inference import load_model
    from ragrec.inference.recommender import Recommender, RecommenderConfig
    from ragrec.inference.rerank import RerankFeatures

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    t0 = time.perf_counter()
    sc, label = scenario_for(args)
    choice = sc.config.retriever_choice or {}
    _log(f"{label}: EASE l2 {choice.get('l2')} decay {choice.get('decay')} (chosen on valid)")
    loaded = load_model(args.model)
    cfg = RerankerConfig(seed=args.seed, vector_layer=args.layer)
    fit = fit_reranker(sc, loaded, cfg)
    fit_seconds = time.perf_counter() - t0
    _log(f"fitted: served {fit.served}; valid {fit.valid}; oof {fit.out_of_fold}")

    split = args.split
    lists = serving_lists(sc, split, None, cfg.candidates)
    if split == "valid":  # what a model evaluated on validation may see: the training split
        from ragrec import schema as S

        hist = [h.item_ids for h in sc.data.histories(splits=(S.TRAIN,)).values()]
    else:
        hist = [h.item_ids for h in sc.histories.values()]
    scores = LLMScores.without_llm(sc.data.name, split, lists)
    variants = {}
    for key, rr in fit.rerankers.items():
        build = RerankFeatures.from_histories(sc.catalog, hist, rr.vectors, rr.vector_ids, rr.info.max_history)
        variants[key] = [rr.score(build.rows(cl.history, cl.candidates, cl.retriever, rr.features)) for cl in lists]
        if rr.info.uses_llm:  # (c'): the LLM alone, its title similarity to the recent history (no vector: last)
            llm_alone = [np.nan_to_num(build.rows(cl.history, cl.candidates, cl.retriever, ["llm_sim_profile"])[:, 0],
                                       nan=-2.0) for cl in lists]  # fmt: skip
    priors = split_priors(sc, split)  # from the histories `hist` holds
    names_e = fit.fusion.names
    row_e = [fit.fusion.score(priors.features(cl.history, cl.candidates, cl.retriever, None, names_e)) for cl in lists]
    from ragrec.finetune.residual import _fit_anchor

    vlists = serving_lists(sc, "valid", None, cfg.candidates)
    vpriors = split_priors(sc, "valid")
    names_g = [n for n in names_e if n != "retriever"]
    fusion_g = _fit_anchor(vlists, vpriors, names_g)
    row_g = [fusion_g.score(priors.features(cl.history, cl.candidates, cl.retriever, None, names_g)) for cl in lists]
    systems = {
        "(a) first stage: recency EASE, 20 candidates": None,
        "(e) first stage + item priors, learned fusion (no LLM)": row_e,
        "(l-) reranker without the LLM's features": variants["reranker_no_llm"],
        "(l) reranker with the LLM's features": variants["reranker"],
        "(c') the LLM alone: title similarity to the recent history in its hidden states": llm_alone,
        "(g) item priors alone (no retriever, no LLM)": row_g,
    }
    results = llm_results(scores, systems, beyond_context(sc.data, split))
    a, e, lm, ll, c, g = results
    served = {"fusion": e, "reranker_no_llm": lm, "reranker": ll}[fit.served]
    comparisons = [("(l) - (l-): the LLM features", compare(ll, lm)), ("(l) - (e)", compare(ll, e)),
                   ("(l) - (a)", compare(ll, a)), ("(l-) - (e)", compare(lm, e)), ("(e) - (a)", compare(e, a)),
                   ("(c') - (g)", compare(c, g)),
                   (f"served ({fit.served}) - (a)", compare(served, a))]  # fmt: skip

    # the served path: the chosen stage inside a Recommender gives the scored lists
    agree, checked = None, 0
    if split == "test":
        rec = Recommender(loaded, [dataclasses.replace(sc, reranker=fit.reranker)], RecommenderConfig(model=args.model))
        if fit.reranker is None:
            rec.scenarios[sc.name].config.fusion = fit.fusion
        check = [j for j, cl in enumerate(lists) if cl.target >= 0][:32]
        recs = rec.recommend_batch(histories=[lists[j].history for j in check], k=10)
        want = {"fusion": row_e, "reranker_no_llm": variants["reranker_no_llm"], "reranker": variants["reranker"]}
        got = scores.lists(want[fit.served])
        agree, checked = sum([i.item_id for i in r.items] == list(got[j][:10]) for j, r in zip(check, recs)), len(check)
        if agree != checked:
            raise SystemExit(f"recommend() differs from the scored path for {checked - agree} of {checked} users")
    rows = [{**r.row(), "candidate_recall@20": round(float(np.isfinite(r.ranks).mean()), 6)} for r in results]
    cold = cold_targets(priors.popularity, [sc.data.targets(split)[u] for u in a.users])
    ranks = {r.system: r.ranks for r in results}
    pairs = [("(l) - (l-)", results[3].system, results[2].system), ("(l) - (a)", results[3].system, a.system)]
    slices = {"cold_target": slice_figures(ranks, cold, pairs), "warm_target": slice_figures(ranks, ~cold, pairs)}
    ratio = served.metrics((10,))["ndcg@10"] / max(a.metrics((10,))["ndcg@10"], 1e-12)
    runs = 0
    if split == "test":
        runs = log_test_run(args.name, f"rerank_stage: LightGBM reranker +/- SmolLM2 item-vector features, {label}",
                            provenance(config)["config"], {f"{r['system']} ndcg@10": r["ndcg@10"] for r in rows})  # fmt: skip
    extra = {
        **provenance(config),
        "retriever": choice,
        "fit": fit.report(),
        "fit_seconds": round(fit_seconds, 1),
        "ratio_served_over_a": round(ratio, 4),
        "recommend_agrees": f"{agree}/{checked}" if agree is not None else None,
        "per_user": f"{args.name}_per_user.csv",
        "slices": slices,
    }
    imp = fit.rerankers["reranker"].importance
    llm_share = sum(v for k, v in imp.items() if k.startswith("llm_"))
    notes = [
        f"{label}; docs/evaluation.md protocol (history masked, two-stage: a target outside the 20 candidates is a "
        "miss, pessimistic ties). Early stopping, the fusions and the served choice on validation users only.",
        f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included). Command: `{extra['command']}`.",
        f"Training lists: out-of-fold recency EASE ({fit.out_of_fold['folds']} folds), {fit.out_of_fold['positions']} "
        f"positions, {fit.out_of_fold['lists_with_target']} hold their target (out-of-fold recall@20 "
        f"{fit.out_of_fold['oof_recall@20']}, in-sample {fit.out_of_fold['in_sample_recall@20']}).",
        f"Validation NDCG@10 (all validation users): {fit.valid}; served: {fit.served}. Served / (a) NDCG@10 on "
        f"{split}: {ratio:.3f}."
        + (f" recommend() gave the scored lists for {agree}/{checked} checked users." if agree is not None else ""),
        f"Share of the (l) model's split gain taken by the LLM features: {llm_share:.1%} ({imp}).",
        slice_note(slices, ["(l) - (l-)"], warm=False),
        f"Fit time (lists, LLM item vectors, both models): {fit_seconds / 60:.1f} min on this CPU; timing {fit.timing}.",
    ]
    where = Path(args.out) if args.out else RESULTS
    write_report(where / args.name, rows, title=f"Learning-to-rank stage, {label} ({split})", results=results,
                 comparisons=comparisons, notes=notes, extra=extra,
                 targets=[sc.data.targets(split)[u] for u in a.users])  # fmt: skip
    print_summary(rows, comparisons)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_options(p, "rerank_stage")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--layer", type=int, default=None, help="hidden layer of the LLM item vectors (default: middle)")
    args = parse_dataset_args(p, argv)
    runlog.started()
    run(args)


if __name__ == "__main__":
    main()
