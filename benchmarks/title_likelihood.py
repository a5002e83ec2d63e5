"""A screening on validation users: the LLM's likelihood of each candidate's title given the history.

The LLM-stage issue's untested LLM signal: for every validation user's 20 served candidates (recency
EASE, docs/evaluation.md histories), the mean log-probability per token of the candidate's line
"<title> (<year>)" after a prompt listing the user's last ``--history`` titles, zero-shot (the
prompt's key/value cache is computed once per user and shared by its candidates). Reported on the
same validation users, with paired bootstrap CIs:

* the retriever's order; the title likelihood alone; popularity alone (the prior it must beat);
* a LightGBM lambdarank reranker over the reranker's non-LLM features, with and without the title
  likelihood, each cross-fitted over ``--folds`` folds of the validation users (each user scored by a
  model that never saw them), so the difference is what the feature adds.

Validation only (a development screening: nothing is logged as a test figure). Writes
``benchmarks/results/<name>.{json,md}``, ``<name>_recall.png`` and ``<name>_per_user.csv``.

    python benchmarks/title_likelihood.py                      # ML-100K, ~20 min on 2 CPU cores
    python benchmarks/title_likelihood.py --model gemma3-270m --name title_likelihood_gemma
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np
import runlog
from runlog import print_summary, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROMPT = "Movies I watched recently, oldest first:\n{history}\nThe next movie I watched:\n"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def title_loglik(loaded, prefix: str, lines: list[str]) -> np.ndarray:
    """Mean log-probability per token of each of ``lines`` right after ``prefix`` (one pass over the
    prefix; its cache is repeated for the lines, which run as one right-padded batch)."""
    import torch

    model, tok = loaded.model, loaded.tokenizer
    pre = tok(prefix, add_special_tokens=False)["input_ids"]
    cands = [tok(line, add_special_tokens=False)["input_ids"] for line in lines]
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=torch.tensor([pre]), use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(len(cands))
        first = torch.log_softmax(out.logits[0, -1].float(), -1)  # the first token of every line
        width = max(len(c) for c in cands)
        ids = torch.full((len(cands), width), tok.pad_token_id or 0)
        att = torch.zeros((len(cands), len(pre) + width), dtype=torch.long)
        att[:, : len(pre)] = 1
        for r, c in enumerate(cands):
            ids[r, : len(c)] = torch.tensor(c)
            att[r, len(pre) : len(pre) + len(c)] = 1
        pos = torch.arange(len(pre), len(pre) + width)[None].expand(len(cands), -1)
        logp = torch.log_softmax(
            model(input_ids=ids, attention_mask=att, position_ids=pos, **{name: cache}).logits.float(), -1
        )
    return np.array([(float(first[c[0]]) + sum(float(logp[r, t, c[t + 1]]) for t in range(len(c) - 1))) / len(c)
                     for r, c in enumerate(cands)])  # fmt: skip


def _cross_fitted(lists, rows: list[np.ndarray], folds: int, seed: int) -> list[np.ndarray]:
    """Scores of a lambdarank model per list, each from a model fitted on the other folds' lists."""
    import lightgbm as lgb

    fold = np.arange(len(lists)) % folds
    np.random.default_rng(seed).shuffle(fold)
    scores: list[np.ndarray] = [np.zeros(0)] * len(lists)
    params = {"objective": "lambdarank", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20,
              "verbose": -1, "seed": seed, "deterministic": True, "num_threads": 2}  # fmt: skip
    for f in range(folds):
        train = [j for j in range(len(lists)) if fold[j] != f and lists[j].target >= 0]
        x = np.vstack([rows[j] for j in train])
        y = np.concatenate([np.eye(len(lists[j].candidates))[lists[j].target] for j in train])
        booster = lgb.train(params, lgb.Dataset(x, y, group=[len(lists[j].candidates) for j in train]), 150)
        for j in np.flatnonzero(fold == f):
            scores[j] = booster.predict(rows[j])
    return scores


def run(args) -> None:
    from llm_rank import _scenario
    from tqdm.auto import tqdm

    from ragrec import schema as S
    from ragrec.eval import EvalResult
    from ragrec.eval.report import compare, write_report
    from ragrec.finetune.ltr import list_ranks
    from ragrec.finetune.residual import serving_lists
    from ragrec.inference import load_model
    from ragrec.inference.rerank import LLM_RERANK_FEATURES, RERANK_FEATURES, RerankFeatures, _title

    config = vars(args).copy()
    sc = _scenario()
    lists = serving_lists(sc, S.VALID, None, args.candidates)
    loaded = load_model(args.model)
    loaded.model.eval()
    cat = sc.catalog
    t0 = time.perf_counter()
    ll = []
    for cl in tqdm(lists, desc="title likelihood"):
        history = "\n".join(_title(cat[i]) for i in cl.history[-args.history :])
        ll.append(title_loglik(loaded, PROMPT.format(history=history), [_title(cat[c]) + "\n" for c in cl.candidates]))
    per_list = (time.perf_counter() - t0) / len(lists)
    _log(f"{per_list:.2f} s per list of {args.candidates}")

    train_hist = [h.item_ids for h in sc.data.histories(splits=(S.TRAIN,)).values()]
    build = RerankFeatures.from_histories(cat, train_hist)
    base = [n for n in RERANK_FEATURES if n not in LLM_RERANK_FEATURES]
    rows = [build.rows(cl.history, cl.candidates, cl.retriever, base) for cl in lists]
    systems = {
        "retriever (recency EASE, 20 candidates)": [cl.retriever for cl in lists],
        "popularity alone": [r[:, base.index("popularity")] for r in rows],
        f"title likelihood alone ({args.model})": ll,
        "reranker without it (cross-fitted)": _cross_fitted(lists, rows, args.folds, args.seed),
        "reranker with it (cross-fitted)": _cross_fitted(
            lists, [np.column_stack([r, x]) for r, x in zip(rows, ll)], args.folds, args.seed
        ),  # fmt: skip
    }
    users = [cl.user_id for cl in lists]
    results = [EvalResult(name, sc.data.name, S.VALID, users, list_ranks(lists, s)) for name, s in systems.items()]
    r = {x.system: x for x in results}
    names = list(r)
    comparisons = [(f"{names[4]} - {names[3]}", compare(r[names[4]], r[names[3]])),
                   (f"{names[2]} - {names[1]}", compare(r[names[2]], r[names[1]])),
                   (f"{names[2]} - {names[0]}", compare(r[names[2]], r[names[0]]))]  # fmt: skip
    rows_out = [{**x.row(), "candidate_recall@20": round(float(np.isfinite(x.ranks).mean()), 6)} for x in results]
    extra = {**provenance(config), "seconds_per_list": round(per_list, 3), "per_user": f"{args.name}_per_user.csv"}
    notes = [
        f"ML-100K (RecBole split), all {len(lists)} validation users; two-stage (a target outside the "
        f"{args.candidates} candidates is a miss), pessimistic ties. Validation only: nothing logged as a test run.",
        f"Prompt: the last {args.history} history titles, then each candidate's line; zero-shot {args.model}; "
        f"{per_list:.2f} s per list on this CPU (prefix cached). The rerankers are cross-fitted over "
        f"{args.folds} folds of these users (150 rounds, 15 leaves): a screening, not the served recipe.",
        f"Command: `{extra['command']}`.",
    ]
    write_report(RESULTS / args.name, rows_out, title="Title likelihood as a ranking signal, ML-100K (valid)",
                 results=results, comparisons=comparisons, notes=notes, extra=extra,
                 targets=[sc.data.targets(S.VALID)[u] for u in users])  # fmt: skip
    print_summary(rows_out, comparisons)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--history", type=int, default=10, help="history titles in the prompt")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="title_likelihood")
    args = p.parse_args(argv)
    runlog.started()
    run(args)


if __name__ == "__main__":
    main()
