"""Explanations on Amazon Musical Instruments reviews (docs/evaluation.md): BLEU-4, ROUGE-L and the
grounding rate of zero-shot vs LoRA-fine-tuned SmolLM2, against each test user's own held-out
review text.

Leave-one-out split (the last review of each user is the test target, the one before it the
validation target); the retriever is recency EASE on the training split (the scenario needs one;
explanations do not use it). The items carry no titles (no metadata was available): prompts name
them by ASIN, as PETER and P5 do with ids, followed by what the training split's reviews of the item
mention (``ragrec.data.describe_from_reviews``: "item B008BPI2HE | reviews mention: capo, planet
waves, ..."; ``--no-describe``: the ASIN alone).

Stages (each can run alone):

* ``train``: an explain-only LoRA adapter from training-split reviews (the review of the item a
  user reviewed next, given what they reviewed before), early stopping on validation ROUGE-L
  -> ``.bench/ft_mi/adapter``.
* ``score``: explanations of the held-out item for sampled test users by the zero-shot model and
  by the fine-tuned one -> ``.bench/ft_mi/explain_{zero,tuned}.json`` (a system already scored is
  kept).
* ``report``: ``benchmarks/results/explain_mi.{json,md}`` + a plot, with a paired bootstrap CI
  of the ROUGE-L difference and a few explanations side by side.

    python benchmarks/explain_mi.py                     # train, score, report
    python benchmarks/explain_mi.py --stages score report --users 100
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
import runlog  # noqa: E402
from runlog import log_test_run, provenance  # noqa: E402

from ragrec.io import atomic_write_text  # noqa: E402

RESULTS = HERE / "results"
WORK = HERE.parent / ".bench"
DATA = HERE.parents[1] / "shared" / "data" / "amazon-musical-instruments-reviews"
TRAIN_DEFAULTS = {
    "mixture": {"explain": 1.0},
    "examples": 600,
    "positions": 3,
    "max_review_chars": 400,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_layers": 12,
    "learning_rate": 5e-4,
    "grad_accum": 8,
    "eval_steps": 25,
    "eval_users": 30,
    "patience": 2,
    "max_minutes": 15,
}  # the committed run's recipe (results/explain_mi.json): `python benchmarks/explain_mi.py` reproduces it
SYSTEMS = {"zero": "zero-shot SmolLM2-135M", "tuned": "fine-tuned SmolLM2-135M (LoRA, explain)"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _scenario(data_dir: Path, adapter: Path | None = None, describe: bool = True):
    from ragrec.data import describe_from_reviews, load_raw
    from ragrec.data.split import leave_one_out
    from ragrec.pipeline import build_scenario

    data = leave_one_out(load_raw("amazon", data_dir, name="amazon-musical-instruments"))
    if describe:  # "item B00.. | reviews mention: capo, planet waves, ..." from training-split reviews
        data = describe_from_reviews(data)
    sc = build_scenario(data, "instruments", item_noun="product", text=False)
    sc.adapter = adapter
    return sc


def train(ft_dir: Path, data_dir: Path, model: str, overrides: dict, describe: bool = True) -> None:
    from ragrec.finetune import FinetuneConfig, finetune
    from ragrec.inference import load_model

    sc = _scenario(data_dir, describe=describe)
    loaded = load_model(model)
    config = FinetuneConfig(**{**TRAIN_DEFAULTS, **overrides})
    _log(
        f"training an explain adapter on {loaded.device}: {config.examples} examples, at most {config.max_minutes} min"
    )
    res = finetune(loaded, sc, config, ft_dir / "adapter", resume=True)
    summary = {"train_seconds": res.train_seconds, "steps": res.steps, "stop_reason": res.stop_reason,
               "examples": res.examples, "notes": res.notes, "device": loaded.device,
               "valid_curve": res.info.metrics["valid_curve"], "config": config.model_dump(), "log": res.log}  # fmt: skip
    (ft_dir / "train.json").write_text(json.dumps(summary, indent=2, default=str))
    _log(f"trained in {res.train_seconds / 60:.1f} min, {res.steps} steps ({res.stop_reason})")


def score(ft_dir: Path, data_dir: Path, model: str, n_users: int, describe: bool = True) -> None:
    from ragrec.eval.explain import evaluate_explanations, review_targets
    from ragrec.eval.llm import sample_users
    from ragrec.inference import Recommender, load_model

    base = _scenario(data_dir, describe=describe)
    users = sample_users(sorted(review_targets(base.data, "test")[0]), n_users, seed=0)
    for key, system in SYSTEMS.items():
        out = ft_dir / f"explain_{key}.json"
        old = json.loads(out.read_text()) if out.is_file() else {}
        if old.get("users") == users and old.get("describe", False) == describe:
            _log(f"{system}: already scored ({out})")
            continue
        adapter = ft_dir / "adapter" if key == "tuned" else None
        if adapter is not None and not adapter.is_dir():
            raise SystemExit(f"no adapter at {adapter}: run the train stage first")
        base.adapter = adapter
        rec = Recommender(load_model(model), [base])
        _log(f"{system}: explaining for {len(users)} test users")
        ev = evaluate_explanations(rec, "instruments", system=system, users=users)
        payload = {"system": system, "users": ev.users, "items": ev.items, "references": ev.references,
                   "texts": ev.texts, "grounded": ev.grounded.tolist(), "skipped": ev.skipped,
                   "seconds": ev.seconds, "device": rec.loaded.device, "dataset": ev.dataset, "shown": ev.shown,
                   "fallback": ev.fallback.tolist(), "names_evidence": ev.names_evidence.tolist(), "describe": describe}  # fmt: skip
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(out)
        _log(f"{system}: {ev.metrics()} in {ev.seconds / 60:.1f} min")


def _plot(evals, per_user) -> bytes:
    import matplotlib

    from ragrec.eval.report import png_bytes

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["BLEU-4", "ROUGE-L", "grounded %"]
    width = 0.8 / len(evals)
    for j, ev in enumerate(evals):
        m = ev.metrics()
        left.bar(np.arange(3) + j * width, [m["bleu4"], m["rouge_l"], 100 * m["grounded_rate"]], width, label=ev.system)
        right.hist(per_user[j], bins=np.linspace(0, 60, 31), alpha=0.5, label=ev.system)
    left.set_xticks(np.arange(3) + width * (len(evals) - 1) / 2, names)
    left.set_title("Musical Instruments test users (0-100)")
    left.legend(fontsize=8)
    right.set_xlabel("ROUGE-L F1 per user")
    right.set_ylabel("users")
    right.set_title("Per-user ROUGE-L against the held-out review")
    right.legend(fontsize=8)
    return png_bytes(fig)


def report(ft_dir: Path, results: Path = RESULTS, config: dict | None = None, log: bool = True) -> None:
    from ragrec.eval.explain import ExplanationEval
    from ragrec.eval.report import write_report

    evals = []
    scored = {key: json.loads((ft_dir / f"explain_{key}.json").read_text()) for key in SYSTEMS}
    for d in scored.values():
        flags = {k: np.array(d[k], dtype=bool) if k in d else None for k in ("fallback", "names_evidence")}
        evals.append(ExplanationEval(d["dataset"], d["system"], "test", d["users"], d["items"], d["references"],
                                     d["texts"], np.array(d["grounded"], dtype=bool), d["skipped"], d["seconds"],
                                     d.get("shown"), **flags))  # fmt: skip
    zero, tuned = evals
    described = scored["tuned"].get("describe", False)
    trained = json.loads((ft_dir / "train.json").read_text())
    rows = []
    for ev in evals:
        m = ev.metrics()
        rows.append({"dataset": ev.dataset, "system": ev.system, "split": "test", "users": m["users"],
                     "bleu4": round(m["bleu4"], 4), "rouge_l": round(m["rouge_l"], 4),
                     "grounded_rate": round(m["grounded_rate"], 4),
                     **{k: round(m[k], 4) for k in ("fallback_rate", "names_evidence_rate") if k in m},
                     "seconds_per_explanation": round(ev.seconds / max(len(ev.users), 1), 3),
                     "train_seconds": round(trained["train_seconds"], 1) if ev is tuned else None})  # fmt: skip
    diff = tuned.compare(zero)
    cfg = trained["config"]
    notes = [
        "docs/evaluation.md: leave-one-out per user; the target is the held-out review of the test interaction, cut at a "
        f"sentence end within {cfg['max_review_chars']} characters; users whose test review is missing or under 40 "
        f"characters are left out ({zero.skipped or 'none'}). Explanations are greedy under the explain template's "
        f"output contract ({_contract()}), prompted with the evidence (the history items behind the item).",
        "BLEU-4: corpus BLEU over lower-cased words and punctuation (torchmetrics). ROUGE-L: mean per-user LCS F1. "
        "Grounding: the explanation names no item outside the user's history and the explained item, quotes no "
        "title outside the catalog, and states no category or year/decade that neither the explained item nor a "
        "named item has. Items have no titles, categories or years here (ASINs only), so the checks that bite are "
        "quoted titles and stated years (the zero-shot model calls items 'a high-end, 2019-2020 model').",
        "Item text: "
        + (
            "each item line is its ASIN and what the training split's reviews of it mention (`ragrec.data."
            "describe_from_reviews`: words and two-word phrases that several of the item's reviews use and few other "
            "items' reviews do, e.g. 'item B003AYEAHC | reviews mention: chorus effect, mxr micro, analog chorus'); "
            "held-out reviews are never read. Adapter and zero-shot model see the same prompts."
            if described
            else "the ASIN alone (`--no-describe`)."
        ),
        f"Training: {sum(trained['examples'].values())} explain examples from training-split reviews, LoRA "
        f"r={cfg['lora_r']} on the last {cfg['lora_layers']} layers, lr {cfg['learning_rate']:g}, {trained['steps']} "
        f"steps of {cfg['grad_accum']}, {trained['train_seconds'] / 60:.1f} min on {trained['device']} "
        f"({trained['stop_reason']}); validation ROUGE-L on {cfg['eval_users']} users: {trained['valid_curve']}.",
        "Evidence: the history items behind the item (EASE's exact per-item contributions) are in the prompt and "
        "in every response (`Explanation.evidence`). Items here have no names, so an explanation names an evidence "
        "item only by writing its ASIN (names_evidence_rate); the fine-tuned model learned to write like a review and "
        "names none. Fallback: the shown text was built from the data because the model's was refused.",
        "Published peer (another dataset, for orientation): P5-small on Beauty, BLEU-4 2.70, ROUGE-L 18.65.",
    ]
    samples = ["", "## Examples (the first 20 users: what each model wrote, and what was shown where it differs)", ""]
    for j in range(min(20, len(zero.users))):
        samples += [f"**user {zero.users[j]}, item {zero.items[j]}**", "", f"- held-out review: {zero.references[j]}"]
        for ev, name in ((zero, "zero-shot"), (tuned, "fine-tuned")):
            samples.append(f"- {name}: {ev.texts[j]}")
            if ev.shown is not None and ev.shown[j] != ev.texts[j]:
                samples.append(f"  - shown: {ev.shown[j]}")
        samples.append("")
    per_user = [ev.rouge_per_user() for ev in evals]
    recipe = "explain_mi: LoRA explain adapter vs zero-shot SmolLM2-135M"
    earlier = _logged_rouge(recipe) if log else _logged_rouge(recipe)[:-1]  # render-only: this run is the last
    runs = log_test_run("explain_mi", recipe, config or {},
                        {f"{r['system']} {m}": r[m] for r in rows for m in ("bleu4", "rouge_l", "grounded_rate")}) if log \
        else runlog.test_runs(recipe)  # fmt: skip
    notes.append(f"Test runs of this recipe in results/test_runs.jsonl: {runs} (this one included; runs before "
                 "2026-12-02 were not logged). Per-user ROUGE-L and grounding: explain_mi_per_user.csv.")  # fmt: skip
    if earlier:
        notes.append("Earlier logged test runs, fine-tuned ROUGE-L: " + "; ".join(earlier) + ".")
    _write_per_user(results / "explain_mi_per_user.csv", evals, per_user)
    written = write_report(results / "explain_mi", rows, title="Explanations, Amazon Musical Instruments (test)",
                           comparisons=[(f"{tuned.system} - {zero.system}", diff)], notes=notes,
                           keys=("users", "bleu4", "rouge_l", "grounded_rate", *[k for k in ("fallback_rate",
                                 "names_evidence_rate") if k in rows[0]], "seconds_per_explanation"),
                           figures={"scores": _plot(evals, per_user)},
                           extra={**provenance(config or {}),
                                  "train": {k: trained[k] for k in ("train_seconds", "steps", "stop_reason",
                                                                    "examples", "valid_curve", "config")}})  # fmt: skip
    md = results / "explain_mi.md"  # the samples go below the table and notes, as they read
    atomic_write_text(md, md.read_text() + "\n".join(samples) + "\n")
    for r in rows:
        print(f"{r['system']}: BLEU-4 {r['bleu4']:.2f} ROUGE-L {r['rouge_l']:.2f} grounded {r['grounded_rate']:.3f}")
    _log("wrote " + ", ".join(str(p) for p in written.values()))


def _logged_rouge(recipe: str) -> list[str]:
    """``"13.93 (2026-12-03, 931e35f)"`` for each logged test run of ``recipe``, oldest first."""
    out = []
    for entry in runlog.logged_runs(recipe):
        fig = [v for k, v in entry["figures"].items() if k.startswith("fine-tuned") and "rouge_l" in k]
        if fig:
            out.append(f"{fig[0]:.2f} ({entry['date'][:10]}, {entry['commit']})")
    return out


def _contract() -> str:
    from ragrec.prompts import builtin_registry

    out = builtin_registry().get("default", "explain").output
    return (f"at most {out.max_new_tokens} new tokens and {out.max_sentences or 'any number of'} sentences, "
            f"no repeated {out.no_repeat_ngram_size}-grams, repetition penalty {out.repetition_penalty:g}")  # fmt: skip


def _write_per_user(path: Path, evals, per_user) -> None:
    """One row per user: the explained item, and each system's ROUGE-L and grounding."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["user_id", "item_id", *(f"{ev.system} rouge_l" for ev in evals), *(f"{ev.system} grounded" for ev in evals)]
    )
    for j, user in enumerate(evals[0].users):
        w.writerow(
            [user, evals[0].items[j], *(f"{p[j]:.4f}" for p in per_user), *(int(ev.grounded[j]) for ev in evals)]
        )
    atomic_write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="*", default=["train", "score", "report"])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--set", nargs="*", default=[], help="FinetuneConfig overrides, key=value")
    p.add_argument("--users", type=int, default=400, help="test users explained (sampled with seed 0)")
    p.add_argument(
        "--no-describe",
        dest="describe",
        action="store_false",
        help="prompts name items by ASIN only (no 'reviews mention: ...' from training reviews)",
    )
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument(
        "--render-only",
        action="store_true",
        help="report: rewrite the report of the last logged run (the scores in --work) without logging it again",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="where the report goes (smoke runs: elsewhere)")
    args = p.parse_args(argv)
    runlog.started()  # the commit this run's code is from
    from ragrec.config import parse_overrides

    ft_dir = args.work / "ft_mi"
    ft_dir.mkdir(parents=True, exist_ok=True)
    if "train" in args.stages:
        train(ft_dir, args.data, args.model, parse_overrides(args.set), args.describe)
    if "score" in args.stages:
        score(ft_dir, args.data, args.model, args.users, args.describe)
    if "report" in args.stages:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "render_only"}
        report(ft_dir, args.results, config, log=not args.render_only)


if __name__ == "__main__":
    main()
