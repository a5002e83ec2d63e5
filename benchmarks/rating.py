"""Rating prediction on ML-100K: SVD and the classic predictors (scikit-surprise) beside the LLM's
``rate`` task, zero-shot and fine-tuned. MAE and RMSE on every user's held-out test rating
(RecBole leave-one-out split: the last interaction of each user), paired bootstrap CIs.

Stages (each can run alone; outputs in .bench/rating/):

* ``train``: LoRA on ``rate`` examples from the training split only (classic recipe, mixture
  ``rate``), early stopping on validation MAE -> ``.bench/rating/adapter`` (resumable).
* ``score``: the LLM's expected rating (expectation over the digit tokens) for the test target of
  ``--users`` sampled test users (seeded; about 1.2 s a user on 2 CPU cores), with the user's
  train + valid items and ratings as history; zero-shot and with the adapter
  -> ``.bench/rating/llm_<name>.json`` (resumable per system).
* ``report``: surprise models chosen on validation RMSE (fitted on train), refit on train + valid
  for test, on all test users and on the LLM's sample; global mean; the LLM rows; comparisons with
  SVD on the same users -> ``benchmarks/results/rating.{json,md}``,
  ``rating_per_user.csv``, ``rating_calibration.png``. Every test figure goes to the run log.

    python benchmarks/rating.py                         # all stages (about an hour on 2 CPU cores)
    python benchmarks/rating.py --stages report         # surprise rows + the LLM scores already made
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llm_rank  # noqa: E402  (same folder: the ML-100K scenario on the RecBole split)
import runlog  # noqa: E402
from runlog import log_test_run, provenance  # noqa: E402

from ragrec import schema as S  # noqa: E402

RESULTS = HERE / "results"
WORK = HERE.parent / ".bench" / "rating"
MODEL = "smollm2-135m-instruct"
TRAIN = {"recipe": "classic", "mixture": {"rate": 1.0}, "examples": 1000, "learning_rate": 2e-4, "lora_r": 16,
         "lora_alpha": 32, "lora_layers": 12, "grad_accum": 8, "eval_steps": 25, "eval_users": 60, "patience": 3,
         "max_minutes": 30}  # fmt: skip
# Grids searched on validation RMSE (surprise's defaults are in each).
GRIDS = {
    "svd": [{"n_factors": f, "reg_all": r, "n_epochs": e, "lr_all": 0.005}
            for f in (50, 100) for r in (0.02, 0.05, 0.1) for e in (20, 40)],
    "baseline": [{"bsl_options": {"method": "als", "reg_i": ri, "reg_u": ru, "n_epochs": 10}}
                 for ri in (5, 10, 25) for ru in (5, 15, 30)],
    "knn_baseline": [{"k": k, "min_k": 1} for k in (20, 40, 80)],
}  # fmt: skip
NAMES = {"svd": "SVD (surprise)", "baseline": "Baseline estimates (surprise: mean + user/item biases)",
         "knn_baseline": "Item kNN on baseline residuals (surprise)"}  # fmt: skip
LLM_ROWS = {"zero": "LLM rate, zero-shot SmolLM2-135M", "tuned": "LLM rate, fine-tuned SmolLM2-135M (LoRA)"}
USERS = 300  # test users the LLM rows are scored on (sampled, seeded)


def _sample(held, users: int):
    """The held-out ratings of ``users`` test users sampled with ragrec's seeded sampler (all when fewer)."""
    from ragrec.eval.llm import sample_users
    from ragrec.eval.rating import HeldOutRatings

    keep = set(sample_users(sorted(held.users), users))
    idx = [j for j, u in enumerate(held.users) if u in keep]
    return HeldOutRatings(held.split, [held.users[j] for j in idx], [held.items[j] for j in idx], held.ratings[idx],
                          [held.histories[j] for j in idx], [held.history_ratings[j] for j in idx])  # fmt: skip


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train() -> None:
    from ragrec.finetune import FinetuneConfig, finetune
    from ragrec.inference import load_model

    sc = llm_rank._scenario()
    loaded = load_model(MODEL)
    config = FinetuneConfig(**TRAIN)
    _log(f"training the rate adapter: {config.examples} examples, at most {config.max_minutes} min")
    res = finetune(loaded, sc, config, WORK / "adapter", resume=True)
    summary = {"train_seconds": res.train_seconds, "steps": res.steps, "stop_reason": res.stop_reason,
               "examples": res.examples, "notes": res.notes, "valid_curve": res.info.metrics["valid_curve"],
               "config": config.model_dump()}  # fmt: skip
    (WORK / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    _log(f"trained in {res.train_seconds / 60:.1f} min, {res.steps} steps ({res.stop_reason})")


def score(names: list[str], users: int) -> None:
    from tqdm.auto import tqdm

    from ragrec.eval.rating import held_out_ratings
    from ragrec.inference import Recommender, RecommenderConfig, load_model

    sc = llm_rank._scenario()
    held = _sample(held_out_ratings(sc.data, S.TEST), users)
    loaded = load_model(MODEL)
    for name in names:
        out = WORK / f"llm_{name}.json"
        if out.is_file():
            _log(f"{out} exists; delete it to score again")
            continue
        if name == "tuned":
            if not (WORK / "adapter").is_dir():
                raise SystemExit("no adapter: run the train stage first")
            sc.adapter = WORK / "adapter"
        rec = Recommender(loaded, [sc], RecommenderConfig(model=MODEL))
        preds, start = [], time.perf_counter()
        for item, hist, ratings in tqdm(list(zip(held.items, held.histories, held.history_ratings)),
                                        desc=f"rate ({name})"):  # fmt: skip
            p = rec.predict_rating([item], history=list(hist), ratings=list(ratings))[0]
            preds.append(p.expected)
        seconds = time.perf_counter() - start
        out.write_text(json.dumps({"users": held.users, "predicted": preds, "seconds": seconds}) + "\n")
        _log(f"{name}: {len(preds)} users in {seconds / 60:.1f} min")


def report() -> None:
    from ragrec.eval.rating import RatingResult, SurpriseRater, compare_ratings, held_out_ratings, select_surprise
    from ragrec.io import atomic_write_text

    runlog.started()
    sc = llm_rank._scenario()
    data = sc.data
    held = held_out_ratings(data, S.TEST)
    results, chosen, raters, sample = [], {}, {}, None
    frame = data.interactions_frame()
    fit_frame = frame[frame[S.SPLIT].isin([S.TRAIN, S.VALID])]
    train_mean = float(fit_frame[S.RATING].mean())
    results.append(RatingResult("Global mean rating (train + valid)", held.users, np.full(len(held.users), train_mean),
                                held.ratings, {"trained_on": "train+valid"}))  # fmt: skip
    for algo, grid in GRIDS.items():
        start = time.perf_counter()
        params, tried = select_surprise(data, algo, grid)
        rater = raters[algo] = SurpriseRater(algo, params).fit(data, (S.TRAIN, S.VALID))
        res = rater.evaluate(held, NAMES[algo])
        res.info.update(trained_on="train+valid", valid_rmse=min(t["valid_rmse"] for t in tried),
                        fit_seconds=round(time.perf_counter() - start, 1))  # fmt: skip
        chosen[algo] = {"params": params, "grid": tried}
        results.append(res)
        _log(f"{NAMES[algo]}: {res.metrics()} (params {params})")
    for name, label in LLM_ROWS.items():
        path = WORK / f"llm_{name}.json"
        if not path.is_file():
            _log(f"{path} missing: row '{label}' left out (run --stages score)")
            continue
        got = json.loads(path.read_text())
        if sample is None:
            sample = _sample(held, len(got["users"]))
        if got["users"] != sample.users:
            raise SystemExit(f"{path}: users differ from the sampled test users; score again")
        results.append(RatingResult(label, sample.users, got["predicted"], sample.ratings,
                                    {"trained_on": "train" if name == "tuned" else "none (zero-shot)",
                                     "seconds_per_user": round(got["seconds"] / len(held.users), 3)}))  # fmt: skip
    full = [r for r in results if r.system not in LLM_ROWS.values()]
    llm = [r for r in results if r.system in LLM_ROWS.values()]
    svd = next(r for r in full if r.system == NAMES["svd"])
    comparisons = [compare_ratings(r, svd) for r in full if r is not svd]
    if llm:  # SVD and the global mean on the LLM's users, for paired comparisons there
        svd_s = raters["svd"].evaluate(sample, f"{NAMES['svd']}, same {len(sample.users)} users")
        svd_s.info["trained_on"] = "train+valid"
        mean_s = RatingResult(f"Global mean rating, same {len(sample.users)} users", sample.users,
                              np.full(len(sample.users), train_mean), sample.ratings, {"trained_on": "train+valid"})  # fmt: skip
        comparisons += [compare_ratings(r, svd_s) for r in (*llm, mean_s)]
        if len(llm) == 2:
            comparisons.append(compare_ratings(llm[1], llm[0]))
        results = full + [svd_s, mean_s] + llm
    config = {"dataset": "ml-100k (RecBole leave-one-out split)", "grids": GRIDS, "train": TRAIN, "model": MODEL}
    for r in results:
        m = r.metrics()
        r.info["test_runs"] = log_test_run(
            "rating", f"rating: {r.system}", config, {"mae": m["mae"], "rmse": m["rmse"]}
        )
    trained = json.loads((WORK / "train.json").read_text()) if (WORK / "train.json").is_file() else None
    payload = {"title": "Rating prediction on ML-100K", "provenance": provenance(config),
               "rows": [r.row() for r in results], "comparisons": comparisons, "chosen": chosen,
               "training": trained and {k: trained[k] for k in ("train_seconds", "steps", "stop_reason", "examples")}}  # fmt: skip
    atomic_write_text(RESULTS / "rating.json", json.dumps(payload, indent=2, default=str) + "\n")
    lines = ["system,user_id,actual,predicted"]  # long form: the rows cover different users
    for r in results:
        lines += [f'"{r.system}",{u},{a:g},{p:.4f}' for u, a, p in zip(r.users, r.actual, r.predicted)]
    atomic_write_text(RESULTS / "rating_per_user.csv", "\n".join(lines) + "\n")
    _plot(results)
    md = _markdown(payload, results)
    atomic_write_text(RESULTS / "rating.md", md)
    print(md)


def _markdown(payload: dict, results) -> str:
    pv = payload["provenance"]
    md = ["# Rating prediction on ML-100K", "",
          f"`{pv['command']}` at commit {pv['commit']} on {pv['date']}. Every user's held-out test interaction "
          "(RecBole leave-one-out split: the last one) and its 1-5 rating; 943 users (the LLM rows: a seeded sample of "
          "them, beside SVD and the global mean on the same users). Surprise models: settings "
          "chosen on validation RMSE (fitted on train, scored on the validation targets), then refit on train + "
          "valid. The LLM rows read each user's train + valid items with their ratings (the same information) and "
          "predict the expectation of the rating over the digit tokens; the fine-tuned adapter was trained on "
          "rate examples from the training split only, early-stopped on validation MAE.", "",
          "| system | trained on | MAE | RMSE | test runs of this row |", "|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        m = r.metrics()
        md.append(f"| {r.system} | {r.info.get('trained_on', '')} | {m['mae']:.4f} | {m['rmse']:.4f} | "
                  f"{r.info.get('test_runs', '')} |")  # fmt: skip
    md += ["", "| comparison (paired bootstrap over users, 1,000 resamples; negative = first errs less) | MAE "
           "difference [95% CI] | RMSE difference [95% CI] |", "|---|---|---|"]  # fmt: skip
    for c in payload["comparisons"]:
        a, b = c["mae"], c["rmse"]
        md.append(f"| {c['name']} | {a['difference']:+.4f} [{a['low']:+.4f}, {a['high']:+.4f}] | "
                  f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}] |")  # fmt: skip
    if payload.get("training"):
        t = payload["training"]
        md += ["", f"Rate adapter: {t['examples']} examples, {t['steps']} optimizer steps in "
               f"{t['train_seconds'] / 60:.1f} min on the CPU ({t['stop_reason']})."]  # fmt: skip
    md += ["", "Chosen settings: " + json.dumps({k: v["params"] for k, v in payload["chosen"].items()}), "",
           "![Mean prediction per true rating](rating_calibration.png)", ""]  # fmt: skip
    return "\n".join(md)


def _plot(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    values = np.arange(1, 6)
    for r in results:
        means = [r.predicted[r.actual == v].mean() if (r.actual == v).any() else np.nan for v in values]
        ax.plot(values, means, marker="o", label=r.system)
    ax.plot(values, values, color="0.6", linestyle="--", label="perfect")
    ax.set_xlabel("held-out rating")
    ax.set_ylabel("mean predicted rating")
    ax.set_title("ML-100K test: mean prediction per true rating")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / "rating_calibration.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rating prediction benchmark (see module docstring).")
    parser.add_argument("--stages", nargs="*", default=["train", "score", "report"], help="train, score, report")
    parser.add_argument("--systems", nargs="*", default=list(LLM_ROWS), help="LLM rows to score: zero, tuned")
    parser.add_argument("--users", type=int, default=USERS, help="test users the LLM rows are scored on")
    args = parser.parse_args(argv)
    runlog.started()
    WORK.mkdir(parents=True, exist_ok=True)
    if "train" in args.stages:
        train()
    if "score" in args.stages:
        score(args.systems, args.users)
    if "report" in args.stages:
        report()


if __name__ == "__main__":
    main()
