"""New items: a share of the catalog held out of training entirely, ranked by text alone.

The cold-start split of the LLM-stage issue: ``--share`` (default 10%) of the items that have
training interactions are drawn at random (``--seed``) and every *training* interaction with them
is removed, so no model fits on them; their validation and test interactions stay, so users whose
held-out item is one of them form the **cold-target slice** (the rest: the warm slice). Every model
fits on the training split only; validation chooses EASE's settings and the fusion weights. On
the same test users (full ranking of the whole catalog, history masked, pessimistic ties), the
report gives:

* popularity and recency EASE (collaborative: a held-out item gets no score, rank after all others);
* text: all-MiniLM-L6-v2 sentence embeddings of each item's title, year and categories (the text
  retriever ragrec serves for new items), the user's query the recency-weighted mean of the history's;
* the LLM: the same query over the LLM's item vectors (mean hidden state of the same item text at
  the middle layer, ``ragrec.inference.rerank.item_vectors``: what the reranker's LLM features use);
* the hybrids EASE + text, EASE + LLM and EASE + text + LLM, weights chosen on validation (EASE
  zeroed on items without training interactions, ``ragrec.retrieval.HybridEncoder``);
* EASE with each held-out item's row and column filled from its nearest trained items in the text
  or the LLM vector space (``EASEEncoder.fill_untrained``; neighbours and shrinkage chosen on
  validation): new items ranked on EASE's own scale;

each on all test users, the cold-target slice and the warm slice, with paired bootstrap CIs for
what the LLM's vectors give against the text encoder's (as neighbour spaces for EASE, alone, and in
the fusion) and what filling adds to EASE, on every slice. Writes ``benchmarks/results/<name>.{json,md}``,
``<name>_recall.png``, ``<name>_slices.png`` and ``<name>_per_user.csv`` (a new target marked "(cold)");
test figures go to ``results/test_runs.jsonl``.

    python benchmarks/cold_items.py                        # ML-100K (RecBole split), ~2 min on 2 cores
    python benchmarks/cold_items.py --dataset games        # Amazon Video Games, 6,000 sampled users, ~27 min
    python benchmarks/cold_items.py --split valid --out /tmp/x  # develop on validation: nothing logged
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import runlog
from rerank_stage import add_dataset_options, parse_dataset_args
from runlog import log_test_run, print_summary, provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # weight of each part beside EASE's 1
FILL_K, FILL_SHRINK = (3, 10, 30), (0.5, 1.0, 2.0, 4.0)  # content-neighbour fill of EASE's untrained items
FILL_K_AMONG = (1, 3, 10, 30, 100)  # ranking among new items only: the neighbours' count is the only setting
TUNE_USERS = 5000  # validation users the fusion weights are chosen on (a fixed random sample beyond this)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hold_out_items(data, share: float, seed: int):
    """``data`` without the training interactions of ``share`` of its trained items (drawn with
    ``seed``), and those items' ids (sorted)."""
    from ragrec import schema as S
    from ragrec.data import InteractionData

    frame = data.interactions_frame()
    trained = sorted(frame.loc[frame[S.SPLIT] == S.TRAIN, S.ITEM_ID].unique())
    size = max(1, round(share * len(trained)))
    cold = sorted(np.random.default_rng(seed).choice(trained, size=size, replace=False).tolist())
    keep = ~((frame[S.SPLIT] == S.TRAIN) & frame[S.ITEM_ID].isin(set(cold)))
    reduced = InteractionData.from_frames(f"{data.name}-cold{round(100 * share)}", frame[keep], data.items_frame())
    return reduced, cold


class _Among:
    """An encoder ranking only the catalog rows ``rows`` (every other item scores far below them):
    the item cold-start protocol of ranking a new item among the new items."""

    def __init__(self, encoder, rows) -> None:
        self.encoder, self.kind = encoder, encoder.kind
        self.item_ids, self.item_index = encoder.item_ids, encoder.item_index
        self.outside = np.ones(len(encoder.item_ids), dtype=bool)
        self.outside[list(rows)] = False

    def indices(self, items):
        return self.encoder.indices(items)

    def scores(self, histories):
        out = np.array(self.encoder.scores(histories), dtype=np.float32)
        out[:, self.outside] = -1e30
        return out


def _best_fill(ease, vectors, data, users, grid, among=None):
    """The filled EASE of the (k, shrink) in ``grid`` that scores the best validation NDCG@10 on
    ``users`` (ranking among ``among`` rows when given), its (k, shrink) and that score (first best)."""
    from ragrec import schema as S
    from ragrec.eval import evaluate_encoder

    best = None
    for k, shrink in grid:
        enc = ease.fill_untrained(vectors, k=k, shrink=shrink)
        scored = _Among(enc, among) if among is not None else enc
        score = evaluate_encoder(scored, data, split=S.VALID, users=users, list_k=0).metrics((10,))["ndcg@10"]
        if best is None or score > best[2]:
            best = (enc, (k, shrink), score)
    return best


def _subset(result, mask: np.ndarray, label: str):
    from ragrec.eval import EvalResult

    users = [u for u, m in zip(result.users, mask) if m]
    return EvalResult(f"{result.system} [{label}]", result.dataset, result.split, users, result.ranks[mask])


def _slices_plot(rows: list[dict], slices: list[str], systems: list[str]) -> bytes:
    """Grouped bars: NDCG@10 of every system on every slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["system"]: r["ndcg@10"] for r in rows}
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(systems)
    for j, system in enumerate(systems):
        vals = [by.get(f"{system} [{s}]", np.nan) for s in slices]  # NaN: the system has no row there
        ax.bar(np.arange(len(slices)) + j * width, vals, width, label=system)
    ax.set_xticks(np.arange(len(slices)) + width * (len(systems) - 1) / 2, slices)
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def run(args) -> None:
    from ragrec import schema as S
    from ragrec.data.text import render_item_text
    from ragrec.eval import evaluate_encoder
    from ragrec.eval.protocol import eval_users
    from ragrec.eval.report import compare, write_report
    from ragrec.inference import load_model
    from ragrec.inference.rerank import item_vectors
    from ragrec.pipeline import select_ease
    from ragrec.retrieval import HybridEncoder, PopularityEncoder, TextEncoder
    from ragrec.retrieval.text import TextEncoderConfig

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    t0 = time.perf_counter()
    if args.dataset == "ml-100k":
        from llm_rank import ml100k_data

        data, label = ml100k_data(), "ML-100K (RecBole split)"
    else:
        from rerank_stage import games_data

        data, label = games_data(args.users, args.seed), f"Amazon Video Games ({args.users} sampled users)"
    data, cold = hold_out_items(data, args.share, args.seed)
    cold_set = set(cold)
    split = args.split
    _log(f"{label}: {len(cold)} of {len(data.item_ids())} items held out of training ({args.share:.0%})")

    timing: dict[str, float] = {}
    t = time.perf_counter()
    pop = PopularityEncoder.fit(data)
    ease, choice = select_ease(data, progress=True)
    timing["ease_seconds"] = time.perf_counter() - t
    _log(f"EASE l2 {choice['l2']} decay {choice['decay']} (valid NDCG@10 {choice['valid_ndcg@10']})")
    t = time.perf_counter()
    text = TextEncoder.fit(data)
    timing["text_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    loaded = load_model(args.model)
    catalog = {i: data.item(i) for i in data.item_ids()}
    same = text.config  # the LLM reads the very text the sentence encoder embeds
    render = functools.partial(render_item_text, fields=same.fields, max_chars=same.max_chars)
    vectors, ids, layer = item_vectors(loaded, catalog, layer=args.layer, max_tokens=64, text=render)
    llm = TextEncoder(ids, vectors, TextEncoderConfig())
    timing["llm_vectors_seconds"] = time.perf_counter() - t
    del loaded

    # fusion weights on validation (a fixed sample of users on big datasets); EASE zeroed on untrained items
    every, vhist, vtargets = eval_users(data, S.VALID)
    vcold_users = [u for u, t in zip(every, vtargets) if t in cold_set]  # for the ranking among new items
    vusers = every
    if len(every) > TUNE_USERS:
        pick = np.random.default_rng(0).choice(len(every), TUNE_USERS, replace=False)
        vusers, vhist, vtargets = [every[i] for i in pick], [vhist[i] for i in pick], [vtargets[i] for i in pick]
    untrained = {0: [int(r) for r in np.flatnonzero(pop.counts == 0)]}
    hybrids, tuning = {}, {}
    for name, parts in {"EASE + text": [ease, text], "EASE + LLM": [ease, llm],
                        "EASE + text + LLM": [ease, text, llm]}.items():  # fmt: skip
        grid = [[1.0]] + [list(GRID)] * (len(parts) - 1)
        hybrids[name], tried = HybridEncoder.tune(parts, vhist, vtargets, grid, cold=untrained)
        tuning[name] = {"weights": hybrids[name].weights, "valid_ndcg@10": round(max(v for _, v in tried), 6)}
        _log(f"hybrid {name}: {tuning[name]}")

    # EASE with its untrained items filled from their content neighbours; (k, shrink) chosen on validation
    cold_rows = [ease.item_index[i] for i in cold]
    filled, filled_among = {}, {}
    for name, enc in (("text", text), ("LLM", llm)):
        grid = itertools.product(FILL_K, FILL_SHRINK)
        filled[name], (k, shrink), best = _best_fill(ease, enc.vectors, data, vusers, grid)
        tuning[f"EASE + {name} neighbours"] = {"k": k, "shrink": shrink, "valid_ndcg@10": round(best, 6)}
        grid = [(k_, 1.0) for k_ in FILL_K_AMONG]  # among new items only k matters
        filled_among[name], (k, _), best = _best_fill(ease, enc.vectors, data, vcold_users, grid, cold_rows)
        tuning[f"EASE + {name} neighbours, among new items"] = {"k": k, "valid_ndcg@10": round(best, 6)}
        _log(f"EASE + {name} neighbours: {tuning[f'EASE + {name} neighbours']}; among new items: k {k}")

    llm_name = f"LLM item vectors ({args.model}, layer {layer})"
    systems = {"popularity": pop, "EASE (recency)": ease, "text (MiniLM)": text, llm_name: llm,
               **{f"hybrid {k}": v for k, v in hybrids.items()},
               "EASE + text neighbours": filled["text"], "EASE + LLM neighbours": filled["LLM"]}  # fmt: skip
    results = [evaluate_encoder(enc, data, split=split, system=name) for name, enc in systems.items()]
    by = {r.system: r for r in results}
    targets = data.targets(split)
    is_cold = np.array([targets[u] in cold_set for u in results[0].users])
    slices = {"all": np.ones(len(is_cold), bool), "cold targets": is_cold, "warm targets": ~is_cold}
    rows, comparisons = [], []
    pairs = [("EASE + LLM neighbours", "EASE + text neighbours"), ("EASE + LLM neighbours", "EASE (recency)"),
             ("EASE + text neighbours", "EASE (recency)"), (llm_name, "text (MiniLM)"),
             ("hybrid EASE + text + LLM", "hybrid EASE + text"), (llm_name, "popularity")]  # fmt: skip
    for label_s, mask in slices.items():
        if not mask.any():
            continue
        sub = {name: (r if label_s == "all" else _subset(r, mask, label_s)) for name, r in by.items()}
        for name, r in sub.items():
            rows.append({**r.row(), "system": f"{name} [{label_s}]"})
        for x, y in pairs:
            comparisons.append((f"{x} - {y} [{label_s}]", compare(sub[x], sub[y])))
    # the item cold-start protocol: users with a new target, ranked among the new items only
    among_systems = {"popularity": pop, "EASE (recency)": ease, "text (MiniLM)": text, llm_name: llm,
                     "EASE + text neighbours": filled_among["text"], "EASE + LLM neighbours": filled_among["LLM"]}  # fmt: skip
    cold_users = [u for u, c in zip(results[0].users, is_cold) if c]
    among = {name: evaluate_encoder(_Among(enc, cold_rows), data, split=split, users=cold_users,
                                    system=f"{name} [cold targets among new items]", list_k=0)
             for name, enc in among_systems.items()}  # fmt: skip
    for r in among.values():
        rows.append(r.row())
    for x, y in [("EASE + LLM neighbours", "EASE + text neighbours"), (llm_name, "text (MiniLM)"),
                 ("EASE + text neighbours", "text (MiniLM)"), ("EASE + LLM neighbours", llm_name)]:  # fmt: skip
        comparisons.append((f"{x} - {y} [cold targets among new items]", compare(among[x], among[y])))
    runs = 0
    if split == S.TEST:
        runs = log_test_run(args.name, f"cold_items: {args.share:.0%} of items held out of training, {label}",
                            provenance(config)["config"], {r["system"] + " ndcg@10": r["ndcg@10"] for r in rows})  # fmt: skip
    total = time.perf_counter() - t0
    extra = {
        **provenance(config),
        "held_out_items": cold,
        "ease": {k: choice[k] for k in ("l2", "decay", "valid_ndcg@10")},
        "hybrids": tuning,
        "llm_layer": layer,
        "slices": {k: int(v.sum()) for k, v in slices.items()},
        "timing": {k: round(v, 1) for k, v in timing.items()},
        "seconds": round(total, 1),
        "per_user": f"{args.name}_per_user.csv",
    }
    weights = "; ".join(f"{k}: {', '.join(f'{a} {b}' for a, b in v.items() if a != 'valid_ndcg@10')}"
                        for k, v in tuning.items())  # fmt: skip
    notes = [
        f"{label}: {len(cold)} items ({args.share:.0%} of those with training interactions, seed {args.seed}) held "
        f"out of training entirely; their validation/test interactions kept. {split} users: {len(is_cold)}, of "
        f"whom {int(is_cold.sum())} have a held-out target (the cold slice).",
        "Full ranking of the whole catalog, history masked, pessimistic ties (docs/evaluation.md); every model "
        "fitted on the training split only; EASE settings, fusion weights and the neighbour fill's (k, shrink) "
        f"chosen on validation users ({weights}).",
        f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included). "
        f"Command: `{extra['command']}`.",
        f"Time: {total / 60:.1f} min on this CPU ({extra['timing']}).",
    ]
    where = Path(args.out) if args.out else RESULTS
    plot = _slices_plot(rows, [s for s in slices if slices[s].any()] + ["cold targets among new items"], list(by))
    write_report(where / args.name, rows, title=f"New items held out of training, {label} ({split})",
                 results=results, comparisons=comparisons, notes=notes, extra=extra, figures={"slices": plot},
                 targets=[f"{targets[u]}{' (cold)' if c else ''}" for u, c in zip(results[0].users, is_cold)])  # fmt: skip
    print_summary(rows, comparisons)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_options(p, "cold_items")
    p.add_argument("--share", type=float, default=0.1, help="share of the trained items held out of training")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--layer", type=int, default=None, help="hidden layer of the LLM item vectors (default: middle)")
    args = parse_dataset_args(p, argv)
    if not 0 < args.share < 1:
        p.error("--share must be between 0 and 1")
    runlog.started()
    run(args)


if __name__ == "__main__":
    main()
