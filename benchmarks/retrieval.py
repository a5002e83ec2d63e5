"""Retrieval benchmark: every figure of the retrieval issue.

    python benchmarks/retrieval.py                       # all parts (hours on 2 CPU cores)
    python benchmarks/retrieval.py --parts ml-100k faiss  # some parts
    python benchmarks/retrieval.py --report-only          # rebuild the report from saved parts
    python benchmarks/retrieval.py --parts mf-ml-100k mf-ml-1m mf-games  # ALS / BPR (implicit) rows only

Each part writes benchmarks/results/retrieval_parts/<part>.json (rows + per-user test ranks);
the report step merges them into benchmarks/results/retrieval.json (``rows``: dataset, system,
split, trained_on, recall@10, ndcg@10, ..., and ``parts``: the command, commit and date that
produced each part), retrieval.md and
retrieval_recall.png. Protocol: docs/evaluation.md (leave-one-out, full ranking, history masked,
pessimistic ties); every model choice (epochs, EASE l2/decay, fusion weights) on validation.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import runlog  # noqa: E402
import torch
from runlog import log_test_run, provenance

from ragrec import schema as S
from ragrec.data import InteractionData, PreprocessConfig, leave_one_out, load_raw, preprocess, pull, split_from_file
from ragrec.eval import EvalResult, evaluate_encoder, evaluate_retriever
from ragrec.eval.protocol import eval_users
from ragrec.eval.report import compare, markdown_table, recall_curve
from ragrec.retrieval import (
    EASEConfig,
    EASEEncoder,
    HybridEncoder,
    PopularityEncoder,
    Retriever,
    SASRecConfig,
    SASRecEncoder,
    TextEncoder,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = RESULTS / "retrieval_parts"
SHARED = HERE.parents[1] / "shared"
DATA = SHARED / "data"
PEERS = SHARED / "peers" / "recbole"

# Quoted from RecBole runs and published papers (no per-user ranks): history-masked rows only.
QUOTED = [
    {"dataset": "ml-100k", "system": "RecBole Pop (quoted)", "split": "test", "recall@10": 0.0710, "ndcg@10": 0.0354, "mrr@10": 0.0246, "recall@20": 0.1177, "ndcg@20": 0.0473},
    {"dataset": "ml-100k", "system": "RecBole BPR (quoted)", "split": "test", "recall@10": 0.1241, "ndcg@10": 0.0673, "mrr@10": 0.0502, "recall@20": 0.1951, "ndcg@20": 0.0850},
    {"dataset": "beauty", "system": "SASRec-CE (quoted, phonism/genrec)", "split": "test", "recall@10": 0.0851, "ndcg@10": 0.0421},
]  # fmt: skip


def load_ml100k() -> InteractionData:
    data = pull("ml-100k").data
    return split_from_file(data, PEERS / "ml100k_loo_split.csv")


def load_ml1m() -> InteractionData:
    data = load_raw("movielens-dat", DATA / "movielens-1m", name="ml-1m")
    return leave_one_out(preprocess(data, PreprocessConfig(min_rating=4)))


def load_games() -> InteractionData:
    return leave_one_out(load_raw("recbole", DATA / "amazon-videogames-llmrank" / "Games.test.inter", name="games"))


def load_beauty() -> InteractionData:
    return leave_one_out(
        load_raw("sequence", DATA / "amazon-p5-beauty-sports-toys" / "beauty" / "sequential_data.txt", name="beauty")
    )


# Per dataset: loader, SASRec settings (ML-1M and Games capped at 12 epochs to fit one session
# on 2 cores: their figures are lower bounds for SASRec), whether item text exists, EASE l2 grid (empty: no EASE;
# its dense N x N model and N-dim queries are too heavy for 12k-17k-item catalogs on 2 cores).
SPECS = {
    "ml-100k": (load_ml100k, dict(max_len=50, batch_size=16, dropout=0.3, epochs=100, patience=15), True, (300, 1000, 3000)),
    "ml-1m": (load_ml1m, dict(max_len=100, batch_size=32, dropout=0.2, epochs=12, patience=3), True, (1000, 3000)),
    "games": (load_games, dict(max_len=50, batch_size=64, dropout=0.3, epochs=12, patience=3, negatives=2048), True, ()),
    "beauty": (load_beauty, dict(max_len=50, batch_size=64, dropout=0.3, epochs=20, patience=4, negatives=2048), False, ()),
}  # fmt: skip
DECAYS = (1.0, 0.9, 0.8, 0.6)
FUSION_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
TUNE_USERS = 5000


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _valid_ndcg(enc, data) -> float:
    return evaluate_encoder(enc, data, split=S.VALID).metrics()["ndcg@10"]


def run_dataset(name: str) -> dict:
    loader, sas_kwargs, has_text, l2_grid = SPECS[name]
    t0 = time.perf_counter()
    data = loader()
    stats = data.stats()
    _log(f"{name}: {stats.users} users, {stats.items} items, {stats.interactions} interactions, split {stats.split}")
    results: dict[str, EvalResult] = {}
    info: dict[str, dict] = {}
    # Stage 1, selection: every part trained on train only, every choice made on valid targets.
    # Stage 2, final: each part refit on train + valid with those choices, evaluated on test.
    final_splits = (S.TRAIN, S.VALID)
    pop_sel = PopularityEncoder.fit(data)
    pop = PopularityEncoder.fit(data, splits=final_splits)
    results["Popularity (train only)"] = evaluate_encoder(pop_sel, data, system="Popularity (train only)")
    results["Popularity"] = evaluate_encoder(pop, data, system="Popularity")

    best_ease, best_v, best_cfg = None, -1.0, None
    for l2 in l2_grid:  # EASE: fit once per l2; decay only changes the query
        start = time.perf_counter()
        base = EASEEncoder.fit(data, EASEConfig(l2=l2))
        fit_s = time.perf_counter() - start
        for decay in DECAYS:
            cfg_e = EASEConfig(l2=l2, decay=decay)
            enc = EASEEncoder(base.item_ids, base.weights, cfg_e)
            v = _valid_ndcg(enc, data)
            _log(f"{name} EASE l2={l2} decay={decay}: valid ndcg@10 {v:.4f}")
            if v > best_v:
                best_ease, best_v, best_cfg = enc, v, cfg_e
                info["EASE (recency)"] = {
                    "l2": l2,
                    "decay": decay,
                    "valid_ndcg@10": round(v, 6),
                    "fit_seconds": round(fit_s, 1),
                }
    ease = EASEEncoder.fit(data, best_cfg, splits=final_splits) if best_cfg is not None else None
    if ease is not None:
        results["EASE (recency, train only)"] = evaluate_encoder(best_ease, data, system="EASE (recency, train only)")
        results["EASE (recency)"] = evaluate_encoder(ease, data, system="EASE (recency)")

    cfg = SASRecConfig(**sas_kwargs)
    _log(f"{name}: training SASRec {cfg.model_dump()}")
    sas_sel, report = SASRecEncoder.fit(data, cfg, progress=True, refit=False)
    results["SASRec (train only)"] = evaluate_encoder(sas_sel, data, system="SASRec (train only)")
    sas = sas_sel.refit(data, max(report.best_epoch, 1), progress=True)
    info["SASRec (ragrec)"] = {"config": cfg.model_dump(), "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
                               "valid_ndcg@10": round(report.best_valid_ndcg10, 6), "train_seconds": round(report.train_seconds, 1),
                               "refit_seconds": round(sas.refit_seconds, 1)}  # fmt: skip
    _log(f"{name}: SASRec {info['SASRec (ragrec)']}")
    results["SASRec (ragrec)"] = evaluate_encoder(sas, data, system="SASRec (ragrec)")

    sel_parts, parts, names = [sas_sel, pop_sel], [sas, pop], ["sasrec", "popularity"]
    if ease is not None:
        sel_parts.insert(1, best_ease)
        parts.insert(1, ease)
        names.insert(1, "ease")
    if has_text:
        start = time.perf_counter()
        text = TextEncoder.fit(data)
        info["Text (MiniLM)"] = {"embed_seconds": round(time.perf_counter() - start, 1)}
        results["Text (MiniLM)"] = evaluate_encoder(text, data, system="Text (MiniLM)")
        sel_parts.append(text)
        parts.append(text)
        names.append("text")
    # Fusion weights on validation with the train-only parts; SASRec is the unit weight; items
    # without interactions are zero in the SASRec part (scored by the others).
    _, hist, targets = eval_users(data, S.VALID)
    if len(hist) > TUNE_USERS:  # big datasets: tune on a fixed random sample of validation users
        pick = np.random.default_rng(0).choice(len(hist), TUNE_USERS, replace=False)
        hist, targets = [hist[i] for i in pick], [targets[i] for i in pick]
    grid = [[1.0]] + [list(FUSION_GRID)] * (len(parts) - 1)
    cold_sel = [int(r) for r in np.flatnonzero(pop_sel.counts == 0)]
    tuned, tried = HybridEncoder.tune(sel_parts, hist, targets, grid, cold={0: cold_sel})
    hybrid = HybridEncoder(parts, tuned.weights, {0: [int(r) for r in np.flatnonzero(pop.counts == 0)]})
    info["Hybrid"] = {"parts": names, "weights": hybrid.weights, "valid_ndcg@10": round(max(t[1] for t in tried), 6),
                      "combinations_tried": len(tried), "normalize": True}  # fmt: skip
    _log(f"{name}: hybrid {info['Hybrid']}")
    results["Hybrid (train only)"] = evaluate_encoder(tuned, data, system="Hybrid (train only)")
    results["Hybrid"] = evaluate_encoder(hybrid, data, system="Hybrid")

    # The deployed path (FAISS Flat index, seen items excluded) must give the same candidates.
    retriever = Retriever.build(hybrid, data)
    staged = evaluate_retriever(retriever, data, k=20, system="Hybrid via FAISS")
    full = results["Hybrid"]
    info["Hybrid"]["faiss_candidate_recall@20"] = round(float((staged.ranks <= 20).mean()), 6)
    info["Hybrid"]["faiss_matches_full_ranking_top20"] = bool(
        np.array_equal(np.minimum(staged.ranks, 21), np.minimum(full.ranks, 21))
    )

    rows, curves, comparisons = [], {}, []
    for system, res in results.items():
        row = {**res.row(), "trained_on": trained_on(system)}
        row["candidate_recall@20"] = row["recall@20"]
        row.update(
            {
                k: v
                for k, v in info.get(system, {}).items()
                if k in ("train_seconds", "refit_seconds", "best_epoch", "weights", "l2", "decay")
            }
        )
        rows.append(row)
        curves[system] = recall_curve(res.ranks).round(6).tolist()
    for system in [s for s in ("Hybrid", "EASE (recency)") if s in results]:
        c = compare(results[system], results["SASRec (ragrec)"])
        comparisons.append({"name": f"{system} - SASRec (ragrec)", **vars(c)})
    if name == "ml-100k":
        peer = pd.read_csv(PEERS / "SASRec_converged_test_ranks.csv", dtype={"user_id": str})
        peer_ranks = dict(zip(peer["user_id"], peer["rank_masked"].astype(float)))
        users = results["Hybrid"].users
        peer_res = EvalResult(
            "RecBole SASRec (converged, per-user ranks)", name, S.TEST, users, np.array([peer_ranks[u] for u in users])
        )
        results["RecBole SASRec"] = peer_res
        rows.append({**peer_res.row(), "trained_on": "train",
                     "source": "RecBole 1.2.1 run on this machine, per-user test ranks (rank_masked)"})  # fmt: skip
        curves[peer_res.system] = recall_curve(peer_res.ranks).round(6).tolist()
        # The headline: ragrec trained on the train split only, like the peer. Refit rows are labelled.
        for system in ("Hybrid (train only)", "EASE (recency, train only)", "SASRec (train only)", "Hybrid",
                       "EASE (recency)", "SASRec (ragrec)"):  # fmt: skip
            c = compare(results[system], peer_res)
            comparisons.append({"name": f"{system} - RecBole SASRec", **vars(c), "trained_on": trained_on(system),
                                "headline": trained_on(system) == "train",
                                "ratio": round(results[system].metrics()["ndcg@10"] / peer_res.metrics()["ndcg@10"], 4)})  # fmt: skip
    part = {
        "dataset": name,
        "stats": stats.to_dict(),
        "rows": rows,
        "info": info,
        "comparisons": comparisons,
        "curves": curves,
        "ranks": {s: [None if math.isinf(x) else int(x) for x in r.ranks] for s, r in results.items()},
        "users": results["Hybrid"].users,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return part


MF_NAMES = {"als": "ALS (implicit)", "bpr": "BPR (implicit)"}
# Datasets of more than LARGE users search smaller grids (each BPR fit there takes minutes on 2 cores):
# the region the full grids chose on ML-100K and ML-1M validation.
LARGE = 20_000
LARGE_GRIDS = {
    "als": [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (10.0, 50.0) for a in (1.0, 10.0)],
    "bpr": [{"factors": 64, "learning_rate": 0.01, "regularization": r, "iterations": 100} for r in (0.01, 0.05, 0.1)],
}  # fmt: skip


class _TrainedUsers:
    """BPR scored with its *trained* user vectors (looked up by the user's training history), to
    measure what the fold-in costs on validation. Only what ``evaluate_encoder`` calls."""

    kind = "bpr-trained-user-vectors"

    def __init__(self, encoder, histories, user_factors) -> None:
        self.encoder, self.item_ids, self.item_index = encoder, encoder.item_ids, encoder.item_index
        self.rows = {tuple(h): k for k, h in enumerate(histories)}
        self.user_factors = user_factors

    def indices(self, items):
        return self.encoder.indices(items)

    def scores(self, histories):
        return self.user_factors[[self.rows[tuple(h)] for h in histories]] @ self.encoder.factors.T


def run_mf(name: str) -> dict:
    """ALS and BPR (implicit) on ``name``'s split: settings and fold-in decay chosen on validation
    (ragrec.pipeline.select_mf, trained on train), evaluated on test as trained (train only) and
    refit on train + valid; paired CIs against ragrec's best first stage of the same training data
    in ``retrieval_parts/<name>.json`` (same users)."""
    from ragrec.pipeline import select_mf
    from ragrec.retrieval import MFEncoder

    base = json.loads((PARTS / f"{name}.json").read_text())
    t0 = time.perf_counter()
    data = SPECS[name][0]()
    results, info = {}, {}
    for algo, label in MF_NAMES.items():
        start = time.perf_counter()
        grid = LARGE_GRIDS[algo] if len(data.user_ids()) > LARGE else None  # None: ragrec.pipeline.MF_GRIDS
        sel, choice = select_mf(data, algo, grid, progress=True)
        info[label] = {k: v for k, v in choice.items() if k != "grid"} | {"grid": choice["grid"],
                      "select_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        _log(f"{name} {label}: chose {info[label]['valid_ndcg@10']} with {sel.config.model_dump()}")
        if algo == "bpr":  # what the fold-in costs: the same model with its trained user vectors, on validation
            hist = data.histories(splits=(S.TRAIN,))
            enc, users = MFEncoder.fit(data, sel.config, user_factors=True)
            users_v, _, _ = eval_users(data, S.VALID)
            pick = sorted(np.random.default_rng(0).choice(len(users_v), min(TUNE_USERS, len(users_v)), replace=False))
            sample = [users_v[i] for i in pick]
            trained = _TrainedUsers(enc, [h.item_ids for h in hist.values()], users)
            folded = evaluate_encoder(enc, data, split=S.VALID, users=sample, list_k=0).metrics((10,))["ndcg@10"]
            own = evaluate_encoder(trained, data, split=S.VALID, users=sample, list_k=0).metrics((10,))["ndcg@10"]
            info[label]["valid_ndcg@10_trained_user_vectors"] = round(own, 6)
            info[label]["valid_ndcg@10_folded_in_same_model"] = round(folded, 6)
            _log(f"{name} BPR on validation: trained user vectors {own:.4f}, folded in {folded:.4f}")
        start = time.perf_counter()
        refit = MFEncoder.fit(data, sel.config, splits=(S.TRAIN, S.VALID))
        info[label]["refit_seconds"] = round(time.perf_counter() - start, 1)
        results[f"{label} (train only)"] = evaluate_encoder(sel, data, system=f"{label} (train only)")
        results[label] = evaluate_encoder(refit, data, system=label)
    users = results[f"{MF_NAMES['als']} (train only)"].users
    if users != base["users"]:
        raise SystemExit(f"{name}: the test users differ from retrieval_parts/{name}.json; rerun that part")
    ragrec_rows = [r for r in base["rows"] if not r["system"].startswith(("RecBole", "Text", "Popularity"))]
    comparisons = []
    for system, res in results.items():
        side = trained_on(system)
        peers = [r for r in ragrec_rows if (r.get("trained_on") or trained_on(r["system"])) == side]
        if not peers:
            continue
        best = max(peers, key=lambda r: r["ndcg@10"])  # the strongest ragrec row of the same training data
        ranks = np.array([np.inf if x is None else x for x in base["ranks"][best["system"]]], dtype=float)
        other = EvalResult(best["system"], name, S.TEST, users, ranks)
        c = compare(res, other)
        comparisons.append({"name": f"{system} - {best['system']}", **vars(c), "trained_on": side,
                            "ratio": round(res.metrics()["ndcg@10"] / other.metrics()["ndcg@10"], 4)})  # fmt: skip
    rows = []
    for system, res in results.items():
        row = res.row()
        rows.append({**row, "trained_on": trained_on(system), "candidate_recall@20": row["recall@20"]})
    return {"dataset": name, "rows": rows, "info": info, "comparisons": comparisons,
            "curves": {s: recall_curve(r.ranks).round(6).tolist() for s, r in results.items()},
            "ranks": {s: [None if math.isinf(x) else int(x) for x in r.ranks] for s, r in results.items()},
            "users": users, "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _run_config(name: str) -> dict:
    """What a part's test run is, for the run log."""
    if name.startswith("mf-"):
        from ragrec.pipeline import MF_DECAYS, MF_GRIDS

        return {"part": name, "grids": MF_GRIDS, "large_grids (> LARGE users)": LARGE_GRIDS, "decays": MF_DECAYS,
                "chosen_on": "valid NDCG@10"}  # fmt: skip
    return {"part": name, "specs": repr(SPECS[name][1:])}


def trained_on(system: str) -> str:
    """Which interactions a row's model was fitted on (docs/evaluation.md: like for like)."""
    if system.startswith("Text"):
        return "item text only"
    if "train only" in system or system.startswith("RecBole"):
        return "train"
    return "train+valid"


def run_faiss(n: int = 1_000_000, d: int = 64, queries: int = 1000, k: int = 100, seed: int = 0) -> dict:
    """1M synthetic 64-d items (a Gaussian mixture, like learnt embeddings): HNSW and IVF against
    exact search: recall@100 and single-query latency (p50/p95)."""
    import faiss

    from ragrec.retrieval import ItemIndex

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(1000, d)).astype(np.float32)
    x = centers[rng.integers(0, 1000, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    q = centers[rng.integers(0, 1000, queries)] + 0.5 * rng.normal(size=(queries, d)).astype(np.float32)
    ids = [str(i) for i in range(n)]
    _log("faiss: exact ground truth")
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    _, truth = flat.search(q, k)
    rows = []
    faiss.omp_set_num_threads(1)  # latency of one query on one thread, as a server would see it
    for factory, params in (
        ("HNSW32", [{"efSearch": 128}, {"efSearch": 256}, {"efSearch": 512}, {"efSearch": 1024}]),
        ("IVF4096,Flat", [{"nprobe": 16}, {"nprobe": 64}]),
    ):
        start = time.perf_counter()
        faiss.omp_set_num_threads(2)
        index = ItemIndex(d, factory)
        index.add(ids, x)
        build_s = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        for p in params:
            index.set_params(**p)
            lat, found = [], []
            for row in range(queries):
                t = time.perf_counter()
                _, got = index.search(q[row : row + 1], k)
                lat.append((time.perf_counter() - t) * 1000)
                found.append(got[0])
            recall = float(
                np.mean([len({int(i) for i in f} & set(truth[r].tolist())) / k for r, f in enumerate(found)])
            )
            row = {"dataset": f"synthetic-{n // 1000}k-{d}d", "system": f"{factory} {p}", "split": "-",
                   f"recall@{k}_vs_exact": round(recall, 4), "p50_ms": round(float(np.median(lat)), 4),
                   "p95_ms": round(float(np.percentile(lat, 95)), 4), "build_seconds": round(build_s, 1), "threads": 1}  # fmt: skip
            _log(f"faiss: {row}")
            rows.append(row)
        del index
    faiss.omp_set_num_threads(2)
    return {"dataset": "faiss", "rows": rows}


def report() -> None:
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(PARTS.glob("*.json"))}
    for name in SPECS:  # the ALS / BPR part of a dataset joins its table, comparisons and plot
        mf = parts.pop(f"mf-{name}", None)
        if mf is None or name not in parts:
            continue
        part = parts[name]
        part["rows"] = [r for r in part["rows"] if not r["system"].startswith(tuple(MF_NAMES.values()))] + mf["rows"]
        part["comparisons"] = part["comparisons"] + mf["comparisons"]
        part["info"] = {
            **part["info"],
            **{k: {x: y for x, y in v.items() if x != "grid"} for k, v in mf["info"].items()},
        }
        part["curves"] = {**part["curves"], **mf["curves"]}
        part.setdefault("extra_provenance", {})["ALS / BPR rows"] = {**mf.get("provenance", {}),
                                                                      "test_runs": mf.get("test_runs")}  # fmt: skip
    rows = []
    for name in [*SPECS, "faiss"]:
        if name in parts:
            rows.extend({**r, "trained_on": r.get("trained_on") or trained_on(r["system"])} if name != "faiss" else r
                        for r in parts[name]["rows"])  # fmt: skip
            if name != "faiss":
                for c in parts[name]["comparisons"]:
                    c["dataset"] = name
    rows.extend(r for r in QUOTED if r["dataset"] in parts)
    made = {name: part.get("provenance", "not recorded (the part predates 2026-12-02)") for name, part in parts.items()}
    payload = {"title": "Retrieval benchmark", "parts": made, "rows": rows}
    (RESULTS / "retrieval.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = ["# Retrieval benchmark", "",
          "`python benchmarks/retrieval.py` on this machine "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads). Protocol: docs/evaluation.md "
          "(leave-one-out, full ranking over the catalog, history masked, pessimistic ties; ML-100K on the RecBole split file). "
          "Model choices on validation targets only. Candidate recall@20 = share of users whose target is in the top 20. "
          "`trained_on`: *train* rows are fitted on the train split only (validation for model choices), like the RecBole "
          "peer, and are the headline comparison with it; *train+valid* rows are the same choices refit on train + "
          "validation (what a deployment would serve) and are labelled separately. Per-user test ranks of every row: "
          "retrieval_parts/<dataset>.json (`ranks`, `users`).", "",
          "Classic models: ALS and BPR rows are the `implicit` package's (ragrec's `MFEncoder`: implicit trains, "
          "users are folded in from their history), settings and fold-in decay chosen on validation. A hybrid of "
          "interactions and item features in the spirit of LightFM has no LightFM row: LightFM 1.17 (its last "
          "release, 2023) ships no wheels and its source build fails under current setuptools (`setup.py`: "
          "`AttributeError: 'dict' object has no attribute '__LIGHTFM_SETUP__'`), so it cannot enter the lock; "
          "ragrec's `Hybrid` row (interactions + item text, weights chosen on validation) stands in that place.", ""]  # fmt: skip
    for name in SPECS:
        if name not in parts:
            md += [f"## {name}", "", "not run (see `--parts`)", ""]
            continue
        part = parts[name]
        s = part["stats"]
        md += [f"## {name}", "", f"{s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions; split {s['split']}; "
               f"whole part {part['seconds'] / 60:.1f} min.", ""]  # fmt: skip
        if "provenance" in part:
            pv = part["provenance"]
            md += [f"Made by `{pv['command']}` at commit {pv['commit']} on {pv['date']}; test runs of this part in "
                   f"results/test_runs.jsonl: {part.get('test_runs', '?')}.", ""]  # fmt: skip
        else:
            md += ["Made before commands and test runs were recorded (before 2026-12-02).", ""]
        for what, pv in part.get("extra_provenance", {}).items():
            md += [f"{what}: `{pv.get('command')}` at commit {pv.get('commit')} on {pv.get('date')}; test runs: "
                   f"{pv.get('test_runs')}. Compared with the strongest ragrec row of the same training data "
                   "(by test NDCG@10, so the comparison is conservative for ALS / BPR), paired over the same users.", ""]  # fmt: skip
        md += [
            markdown_table(
                [r for r in rows if r["dataset"] == name],
                keys=(
                    "trained_on",
                    "recall@10",
                    "ndcg@10",
                    "mrr@10",
                    "recall@20",
                    "ndcg@20",
                    "precision@10",
                    "map@10",
                    "coverage@10",
                ),
            ),
            "",
        ]
        md += [
            "| comparison (paired bootstrap, 1,000 resamples) | metric | difference | 95% CI | ratio |",
            "|---|---|---|---|---|",
        ]
        for c in part["comparisons"]:
            head = " (headline: train only on both sides)" if c.get("headline") else ""
            md.append(
                f"| {c['name']}{head} | {c['metric']} | {c['difference']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] | {c.get('ratio', '')} |"
            )
        md += ["", "Settings chosen on validation: " + json.dumps(part["info"], default=str), ""]
    if "faiss" in parts:
        md += [
            "## FAISS at scale",
            "",
            "| index | recall@100 vs exact | p50 ms | p95 ms | build s |",
            "|---|---|---|---|---|",
        ]
        for r in parts["faiss"]["rows"]:
            md.append(
                f"| {r['system']} | {r['recall@100_vs_exact']:.4f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['build_seconds']} |"
            )
        md += ["", "One query at a time on one thread; 1,000 queries; exact top-100 by brute force.", ""]
    _plot(parts)
    md += ["![Recall@K](retrieval_recall.png)", ""]
    (RESULTS / "retrieval.md").write_text("\n".join(md))
    _log(f"wrote {RESULTS / 'retrieval.json'} ({len(rows)} rows) and retrieval.md")


_SYSTEM_COLORS = [
    "Popularity",
    "EASE (recency)",
    "SASRec (train only)",
    "SASRec (ragrec)",
    "Text (MiniLM)",
    "Hybrid",
    "ALS (implicit)",
    "BPR (implicit)",
]


def _color(system: str) -> str:
    """The same colour for a system in every panel (peers in grey)."""
    if system in _SYSTEM_COLORS:
        return f"C{_SYSTEM_COLORS.index(system)}"
    return "0.45"


def _plot(parts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in SPECS if n in parts]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for system, curve in parts[name]["curves"].items():
            ax.plot(range(1, len(curve) + 1), curve, label=system, color=_color(system))
        ax.set_title(f"{name}: Recall@K (test, history masked)")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "retrieval_recall.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Retrieval benchmark (see module docstring).")
    parser.add_argument(
        "--parts",
        nargs="*",
        default=[*SPECS, "faiss"],
        help=f"any of {[*SPECS, 'faiss']}, or mf-<dataset> (ALS / BPR rows beside a dataset's part)",
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    runlog.started()  # the commit this run's code is from
    PARTS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        valid = [*SPECS, "faiss", *(f"mf-{n}" for n in SPECS)]
        for name in args.parts:
            if name not in valid:
                sys.exit(f"error: unknown part {name!r}; valid: {valid}")
            if name.startswith("mf-"):
                part = run_mf(name[3:])
            else:
                part = run_faiss() if name == "faiss" else run_dataset(name)
            if name != "faiss":
                n = log_test_run("retrieval", f"retrieval: {name}", _run_config(name),
                                 {f"{r['system']} ndcg@10": r["ndcg@10"] for r in part["rows"]})  # fmt: skip
                part["test_runs"] = n
                part["provenance"] = provenance({"parts": args.parts})
            (PARTS / f"{name}.json").write_text(json.dumps(part) + "\n")
            _log(f"saved part {name}")
    report()


if __name__ == "__main__":
    main()
