"""Zero-shot LLM ranking on ML-100K (RecBole split, docs/evaluation.md) against the retriever alone,
and constrained generation over the whole catalog.

Stages (each can run alone, so the LLM scoring can run on another machine):

* ``prepare``: ML-100K with RecBole's split, the demo's retriever (recency EASE on train, l2 and
  decay chosen on validation as ``build_scenario`` does), 20
  candidates per valid/test user, and the rank prompts for 3 cyclic shifts of each list ->
  ``.bench/llm_rank_prompts.json``.
* ``score``: the LLM's label log-probabilities for every prompt -> ``.bench/llm_rank_scores.json``
  (needs only torch + transformers + ragrec; ``--model`` any spec ``load_model`` takes).
* ``generate``: constrained generation of 5 titles over the whole catalog for test users ->
  ``.bench/llm_rank_generate.json`` (out-of-catalog count, target hits, seconds per user).
* ``report``: metrics, fusion weight chosen on validation, paired bootstrap CIs ->
  ``benchmarks/results/llm_rank.{json,md}``, ``llm_rank_recall.png`` and the per-user ranks of every
  system ``llm_rank_per_user.csv``; the test figures are appended to ``results/test_runs.jsonl``.

    python benchmarks/llm_rank.py            # prepare, score, report: the committed run
    python benchmarks/llm_rank.py --stages generate report   # constrained generation too
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import runlog  # noqa: E402
from runlog import log_test_run, provenance

from ragrec.io import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE.parent / ".bench"
PEERS = HERE.parents[1] / "shared" / "peers" / "recbole"
SHIFTS = 3
K = 20
CHECKPOINT = 50  # prompts scored between writes of the scores file


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ml100k_data():
    """ML-100K with the RecBole leave-one-out split of docs/evaluation.md."""
    from ragrec.data import pull, split_from_file

    return split_from_file(pull("ml-100k").data, PEERS / "ml100k_loo_split.csv")


def _scenario():
    from ragrec.pipeline import build_scenario

    return build_scenario(ml100k_data(), "movies", item_noun="movie", text=False)


def prepare(out: Path) -> None:
    from transformers import AutoTokenizer

    from ragrec.eval.protocol import eval_users
    from ragrec.inference.models import LoadedModel, resolve_model
    from ragrec.inference.rank import LetterRanker
    from ragrec.prompts import builtin_registry

    sc = _scenario()
    where, how = resolve_model("smollm2-135m-instruct")  # prompts need only the tokenizer
    tokenizer_only = LoadedModel(None, AutoTokenizer.from_pretrained(where), how, "none", "cpu", "float32")
    ranker = LetterRanker(tokenizer_only, builtin_registry().get("movies", "rank"))
    choice = sc.config.retriever_choice or {}
    work: dict = {"retriever": f"EASE (recency, l2 {choice.get('l2')}, decay {choice.get('decay')} chosen on valid; "
                               "train only)", "k": K, "shifts": SHIFTS}  # fmt: skip
    for split in ("valid", "test"):
        users, histories, targets = eval_users(sc.data, split)
        res = sc.retriever.retrieve(histories=[list(h) for h in histories], k=K)
        cands = [r.item_ids for r in res]
        hist_items = [[sc.catalog[i] for i in h] for h in histories]
        prompts, labels = [], []
        for shift in range(SHIFTS):
            shifted = [[sc.catalog[i] for i in c[shift:] + c[:shift]] for c in cands]
            texts, labs = ranker.prompts(hist_items, shifted, "movie")
            prompts.append(texts)
            labels.append(labs)
        work[split] = {
            "users": users,
            "candidates": cands,
            "retriever_scores": [[c.score for c in r.candidates] for r in res],
            "targets": targets,
            "prompts": prompts,
            "labels": labels,
        }
        _log(
            f"{split}: {len(users)} users, candidate recall@{K} {np.mean([t in c for t, c in zip(targets, cands)]):.4f}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(work))


def score(
    prompts_path: Path,
    out: Path,
    model: str,
    batch_size: int,
    quantization: str,
    shifts: int,
    valid_users: int | None,
    test_users: int | None = None,
    adapter: Path | None = None,
    valid_retrieved: bool = False,
) -> None:
    """LLM scores of the prepared prompts. ``valid_retrieved``: score only the validation users whose
    target the retriever found (the rest are misses under every fusion, so choosing a fusion
    weight or fitting a learned fusion loses nothing, at a third of the cost)."""
    import torch

    from ragrec.inference.models import load_model
    from ragrec.inference.rank import LetterRanker
    from ragrec.prompts import PromptBudget, builtin_registry

    work = json.loads(prompts_path.read_text())
    loaded = load_model(model, quantization=quantization)
    _log(f"model {loaded.source} on {loaded.device} ({loaded.dtype}, {quantization})")
    if adapter is not None:  # a fine-tuned LoRA adapter (benchmarks/finetune.py)
        from peft import PeftModel

        from ragrec.inference.adapters import check_adapter

        check_adapter(adapter, loaded.model, base_model=loaded.source)
        loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
        _log(f"adapter {adapter}")
    ranker = LetterRanker(loaded, builtin_registry().get("movies", "rank"), budget=PromptBudget(max_tokens=4096),
                          batch_size=batch_size)  # fmt: skip
    scores: dict = {
        "model": loaded.source,
        "device": loaded.device,
        "dtype": loaded.dtype,
        "quantization": quantization,
        "adapter": str(adapter) if adapter is not None else None,
    }
    if loaded.device.startswith("cuda"):
        scores["gpu"] = torch.cuda.get_device_name()
    from ragrec.eval.llm import sample_users

    scores["shifts"] = shifts
    done = _scored(out, scores)
    for split in ("valid", "test"):
        users = work[split]["users"]
        if split == "valid" and valid_retrieved:
            users = [u if t in c else None for u, t, c in zip(users, work[split]["targets"], work[split]["candidates"])]
        keep = sample_users([u for u in users if u is not None], valid_users if split == "valid" else test_users, 0)
        rows = [j for j, u in enumerate(users) if u in set(keep)]
        per_shift = []
        for shift in range(shifts):
            t0 = time.perf_counter()
            prompts, labels = work[split]["prompts"][shift], work[split]["labels"][shift]
            have = done.get((split, shift), {})
            todo = [j for j in rows if j not in have]
            for start in range(0, len(todo), CHECKPOINT):  # written as it goes: an interrupted run resumes
                chunk = todo[start : start + CHECKPOINT]
                s = ranker.label_scores([prompts[j] for j in chunk], [labels[j] for j in chunk])
                have.update({j: x.tolist() for j, x in zip(chunk, s)})
                done[(split, shift)] = have
                _write_scores(out, scores, done)
                _log(f"{split} shift {shift}: {start + len(chunk)}/{len(todo)} new prompts, "
                     f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            per_shift.append([have[j] for j in rows])
            _log(f"{split} shift {shift}: {len(rows)} prompts ({len(rows) - len(todo)} reused)")
        scores[f"{split}_rows"] = rows
        scores[split] = per_shift
    atomic_write_text(out, json.dumps(scores))


def _scored(out: Path, meta: dict) -> dict:
    """Scores already in ``out`` for the same model and quantization: {(split, shift): {row: scores}}."""
    if not out.is_file():
        return {}
    old = json.loads(out.read_text())
    if any(old.get(k) != meta.get(k) for k in ("model", "quantization", "dtype", "adapter")):
        _log(f"{out} holds another model's scores: not reused")
        return {}
    done: dict = {}
    for split in ("valid", "test"):
        for shift, per_row in enumerate(old.get(split, [])):
            done[(split, shift)] = dict(zip(old[f"{split}_rows"], per_row))
    return done


def _write_scores(out: Path, meta: dict, done: dict) -> None:
    partial = dict(meta)
    for split in ("valid", "test"):
        rows = sorted(set().union(*(done.get((split, s), {}).keys() for s in range(meta["shifts"]))))
        rows = [j for j in rows if all(j in done.get((split, s), {}) for s in range(meta["shifts"]))]
        partial[f"{split}_rows"] = rows
        partial[split] = [[done[(split, s)][j] for j in rows] for s in range(meta["shifts"])]
    atomic_write_text(out, json.dumps(partial))


def generate(out: Path, model: str, users: int | None, n: int = 5, batch_size: int = 8) -> None:
    from ragrec.eval.protocol import eval_users
    from ragrec.inference import ConstrainedGenerator, TitleTrie, load_model
    from ragrec.prompts import builtin_registry

    sc = _scenario()
    loaded = load_model(model)
    gen = ConstrainedGenerator(loaded, builtin_registry().get("movies", "generate"))
    trie = TitleTrie(loaded.tokenizer, list(sc.catalog.values()))
    ids, histories, targets = eval_users(sc.data, "test")
    ids = ids[:users] if users else ids
    # Resumable: rows of an earlier (interrupted) run with the same model and n are kept.
    old = json.loads(out.read_text()) if out.is_file() else {}
    same = old.get("model") == loaded.source and old.get("n") == n
    rows = old.get("rows", []) if same else []
    secs = old.get("seconds", old.get("seconds_per_user", 0.0) * len(rows)) if same else 0.0
    done = {r["user"] for r in rows}

    def write() -> None:
        outside = sum(i not in sc.catalog for r in rows for i in r["items"])
        data = {"model": loaded.source, "device": loaded.device, "users": len(rows), "n": n,
                         "outside_catalog": outside, "seconds": secs,
                         "seconds_per_user": secs / max(len(rows), 1), "rows": rows}  # fmt: skip
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(out)

    todo = [j for j, user in enumerate(ids) if user not in done]
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        t0 = time.perf_counter()
        hists = [[sc.catalog[i] for i in histories[j]] for j in part]
        lists = gen.generate_many(hists, trie, n=n, item_noun="movie", excludes=hists)
        secs += time.perf_counter() - t0
        rows.extend({"user": ids[j], "items": list(res.item_ids), "target": targets[j]} for j, res in zip(part, lists))
        if start % (8 * batch_size) == 0:
            write()
            _log(f"generate: {len(rows)}/{len(ids)} users, {secs / len(rows):.2f} s/user (batches of {batch_size})")
    write()


def _llm_scores(work: dict, scores: dict, split: str, shifts: int, sc=None):
    """Scores in original candidate order, averaged over the first ``shifts`` cyclic shifts (with
    the users' histories when the scenario ``sc`` is given: a learned fusion needs them)."""
    from ragrec.eval.llm import LLMScores
    from ragrec.eval.protocol import eval_users

    rows = scores[f"{split}_rows"]
    w = {k: [v[j] for j in rows] for k, v in work[split].items() if k not in ("prompts", "labels")}
    llm = []
    for u in range(len(w["candidates"])):  # shifted[pos] is original (pos + shift) % n: np.roll undoes it
        llm.append(sum(np.roll(np.array(scores[split][shift][u]), shift) for shift in range(shifts)) / shifts)
    pos = np.array([c.index(t) if t in c else -1 for c, t in zip(w["candidates"], w["targets"])])
    out = LLMScores("ml-100k", split, w["users"], w["candidates"], [np.array(r) for r in w["retriever_scores"]],
                    llm, pos)  # fmt: skip
    if sc is not None:
        users, histories, _ = eval_users(sc.data, split)
        by_user = dict(zip(users, histories))
        out.histories = [list(by_user[u]) for u in out.users]
    return out


def fitted_rows(valid, test, sc, specs: list[tuple[str, str, list[str]]]) -> tuple[dict, dict]:
    """Learned fusions (ragrec.inference.fusion) fitted on the validation scores and scored on the
    test ones, one per ``(label, key, feature names)``: (systems by label, fitted models by key)."""
    from ragrec.eval.llm import fit_learned_fusion, split_priors

    priors = {s: split_priors(sc, s) for s in ("valid", "test")}
    systems, fitted = {}, {}
    for label, key, names in specs:
        fusion = fit_learned_fusion(valid, priors["valid"], names)
        systems[label] = [fusion.score(x) for x in test.fusion_rows(priors["test"], names)]
        fitted[key] = fusion.model_dump()
    return systems, fitted


def learned_rows(valid, test, sc, llm: str, tags: tuple[str, str] = ("", "")) -> tuple[dict, dict]:
    """The retriever + item priors without the LLM, then with the ``llm``'s score too."""
    from ragrec.inference.fusion import DEFAULT_FEATURES as FEATURES

    return fitted_rows(valid, test, sc, [(f"{tags[0]}retriever + item priors, learned fusion (no LLM)", "priors",
                                          [n for n in FEATURES if n != "llm"]),
                                         (f"{tags[1]}{llm} + retriever + item priors, learned fusion", "llm",
                                          list(FEATURES))])  # fmt: skip


def content_rows(valid, test, sc, tag: str = "") -> tuple[dict, dict]:
    """Item priors alone (no retriever, no LLM): how well the attributes a prompt shows (popularity
    aside: titles, categories, years) can order the candidates, i.e. the most a position-neutral LLM
    could get from matching them without knowing which items go together."""
    from ragrec.inference.fusion import DEFAULT_FEATURES as FEATURES

    names = [n for n in FEATURES if n not in ("llm", "retriever")]
    return fitted_rows(valid, test, sc, [(f"{tag}item priors alone, learned (no retriever, no LLM)", "content",
                                          names)])  # fmt: skip


def bias_report(scores) -> dict:
    """The position bias of ``scores``' LLM column (ragrec.eval.llm.slot_bias), for the JSON and notes."""
    from ragrec.eval.llm import slot_bias

    bias = slot_bias(scores)
    return {"position_bias": bias.as_dict(), "position_bias_summary": bias.summary()}


def slot_rows(valid, test, llm: str, tag: str = "") -> tuple[dict, dict]:
    """The LLM's scores with each slot's mean validation score removed (ragrec.eval.llm.slot_calibrated),
    and the position bias of the raw scores on the test users."""
    from ragrec.eval.llm import slot_calibrated

    calibrated = {f"{tag}{llm}, slot-calibrated on valid (position-neutral)": slot_calibrated(test, valid)}
    return calibrated, bias_report(test)


LEARNED_NOTE = (
    "Learned fusion (ragrec.inference.fusion): a conditional logit over each user's 20 candidates fitted on the "
    "validation users whose target was retrieved (the others are misses under any fusion), features: the "
    "retriever's score, log popularity (train split for validation, train + valid for test), category match with "
    "the last 20 history items, year offset and gap, and with the LLM its score. The row with the LLM minus the "
    "row without it is what the LLM adds beyond cheap item priors."
)

SLOT_NOTE = (
    "Position bias: the candidates are shown in the retriever's order (A = its best), and {summary}. A model that "
    "prefers early letters ranks like the retriever without judging the items. The slot-calibrated row subtracts each "
    "slot's mean LLM score over the validation users (ragrec.eval.llm.slot_calibrated): what the model says about "
    "the items themselves; a random order of the 20 candidates scores about candidate recall@20 x 0.227."
)
CONTENT_NOTE = (
    "Item priors alone: the learned fusion over popularity, category match and year offset/gap, without the "
    "retriever's score or the LLM: what a linear ranker gets from the attributes the prompt shows (categories, "
    "years; popularity stands for the titles a model may know). A position-neutral LLM that only matches those "
    "attributes is about this good; beating it needs knowing which items go together."
)


def report(work_path: Path, scores_path: Path, gen_path: Path, config: dict | None = None) -> None:
    from ragrec.eval.llm import choose_fusion_weight, llm_results
    from ragrec.eval.report import compare, write_report

    work, scores = json.loads(work_path.read_text()), json.loads(scores_path.read_text())
    systems: dict[str, float | None] = {"retriever (recency EASE, 20 candidates)": None}
    extra: dict = {
        **provenance(config or {}),
        "retriever": work.get("retriever"),
        "scoring": {k: scores[k] for k in ("model", "device", "dtype", "quantization", "gpu") if k in scores},
    }
    from ragrec.eval.protocol import beyond_context

    sc = _scenario()
    context = beyond_context(sc.data, "test")  # coverage, novelty, diversity, popularity of the re-ranked lists
    results = []
    for shifts in sorted({1, scores["shifts"]}):
        valid = _llm_scores(work, scores, "valid", shifts)
        test = _llm_scores(work, scores, "test", shifts)
        weight, tried = choose_fusion_weight(valid)
        tag = "zero-shot SmolLM2-135M" + (f", {shifts} permutations" if shifts > 1 else "")
        named = {f"{tag}": 0.0, f"{tag} fused with retriever (w={weight:g}, chosen on valid)": weight}
        if shifts == 1:
            named = {**systems, **named}
        results += llm_results(test, named, context)
        extra[f"valid_ndcg@10_by_weight_{shifts}perm"] = tried
    valid, test = (_llm_scores(work, scores, s, 1, sc) for s in ("valid", "test"))
    calibrated, extra["slots"] = slot_rows(valid, test, "zero-shot SmolLM2-135M")
    content, extra["content_fusion"] = content_rows(valid, test, sc)
    learned, extra["learned_fusion"] = learned_rows(valid, test, sc, "zero-shot SmolLM2-135M")
    results += llm_results(test, {**calibrated, **content, **learned}, context)
    base = results[0]
    comparisons = [(f"{r.system} - {base.system}", compare(r, base)) for r in results[1:]]
    comparisons.append((f"{results[-1].system} - {results[-2].system}", compare(results[-1], results[-2])))
    rows = [{**r.row(), "candidate_recall@20": round(float(np.isfinite(r.ranks).mean()), 6)} for r in results]
    target_of = dict(zip(work["test"]["users"], work["test"]["targets"]))
    runs = log_test_run("llm_rank", "llm_rank: zero-shot SmolLM2-135M re-ranking 20 recency-EASE candidates",
                        extra["config"], {f"{r['system']} ndcg@10": r["ndcg@10"] for r in rows})  # fmt: skip
    extra["per_user"] = "llm_rank_per_user.csv"
    notes = [
        "docs/evaluation.md: ML-100K RecBole split, history masked, two-stage (a target outside the 20 candidates is a "
        "miss), pessimistic ties (the retriever's rows too). Fusion weights chosen on the validation targets "
        "(train-only histories).",
        f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included). Command: "
        f"`{extra['command']}`.",
        "Zero-shot: no fine-tuning (issue #5 must beat these rows).",
        f"Users: {len(scores['test_rows'])} of {len(work['test']['users'])} test users and "
        f"{len(scores['valid_rows'])} validation users (for the fusion weight), sampled with seed 0; "
        f"LLM scoring on {scores['device']} ({scores['dtype']}).",
        LEARNED_NOTE + f" Weights: {extra['learned_fusion']}.",
        SLOT_NOTE.format(summary=extra["slots"]["position_bias_summary"]),
        CONTENT_NOTE + f" Weights: {extra['content_fusion']['content']['weights']}.",
    ]
    if gen_path.is_file():
        g = json.loads(gen_path.read_text())
        hits = sum(r["target"] in r["items"] for r in g["rows"])
        extra["constrained_generation"] = {k: g[k] for k in ("model", "device", "users", "n", "outside_catalog",
                                                             "seconds_per_user")} | {"target_in_generated": hits}  # fmt: skip
        notes.append(f"Constrained generation over the whole catalog (1,682 titles) for {g['users']} test users, {g['n']} titles each: {g['outside_catalog']} items outside the catalog, "
                     f"target among them for {hits} users; {g['seconds_per_user']:.2f} s/user on {g['device']}.")  # fmt: skip
    written = write_report(RESULTS / "llm_rank", rows, title="LLM stage, zero-shot, ML-100K (test)",
                           results=results, comparisons=comparisons, notes=notes, extra=extra,
                           targets=[target_of[u] for u in base.users])  # fmt: skip
    print("\n".join(f"{r['system']}: N@10 {r['ndcg@10']:.4f} R@10 {r['recall@10']:.4f}" for r in rows))
    _log("wrote " + ", ".join(str(p) for p in written.values()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="*", default=["prepare", "score", "report"],
                   choices=["prepare", "score", "generate", "report"])  # fmt: skip
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--quantization", default="none")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--generate-users", type=int, default=None, help="first N test users (default: all)")
    p.add_argument("--shifts", type=int, default=1, help="cyclic shifts scored (permutation averaging), <= 3")
    p.add_argument("--valid-users", type=int, default=0,
                   help="validation users scored for the fusion weight (0: all)")  # fmt: skip
    p.add_argument("--valid-retrieved", action=argparse.BooleanOptionalAction, default=True,
                   help="score only validation users whose target was retrieved (lossless for the fusions)")  # fmt: skip
    p.add_argument("--test-users", type=int, default=None, help="test users scored (default: all)")
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=None, help="where score/generate write (default: --work)")
    args = p.parse_args(argv)
    runlog.started()  # the commit this run's code is from
    out = args.out or args.work
    out.mkdir(parents=True, exist_ok=True)
    if "prepare" in args.stages:
        prepare(args.work / "llm_rank_prompts.json")
    if "score" in args.stages:
        score(args.work / "llm_rank_prompts.json", out / "llm_rank_scores.json", args.model, args.batch_size,
              args.quantization, args.shifts, args.valid_users or None, args.test_users,
              valid_retrieved=args.valid_retrieved)  # fmt: skip
    if "generate" in args.stages:
        generate(out / "llm_rank_generate.json", args.model, args.generate_users, batch_size=args.batch_size)
    if "report" in args.stages:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("work", "out")}
        report(args.work / "llm_rank_prompts.json", args.work / "llm_rank_scores.json",
               args.work / "llm_rank_generate.json", config)  # fmt: skip


if __name__ == "__main__":
    main()
