"""``make demo`` (= ``ragrec demo``): ML-100K + the default model, recommendations with
explanations for a few users, a two-turn chat, and a small evaluation table (retriever, zero-shot
LLM, and the second stage the scenario serves, chosen on validation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ragrec import schema as S
from ragrec.pipeline import build_scenario

__all__ = ["run_demo", "DemoReport"]


@dataclass
class DemoReport:
    """What the demo printed, for tests and for the README."""

    recommendations: list = field(default_factory=list)
    explanations: list = field(default_factory=list)
    chat: list = field(default_factory=list)  # the two-turn chat's answers
    rows: list[dict] = field(default_factory=list)
    saved: Path | None = None
    served: str = ""  # what the scenario serves and how it was chosen


def run_demo(
    *,
    dataset: str = "ml-100k",
    model: str | None = None,
    users: int = 3,
    eval_users: int = 100,
    k: int = 5,
    out: Path | None = None,
    echo: Callable[[str], None] = print,
    loaded=None,
    embedder=None,
) -> DemoReport:
    """Pull ``dataset``, build a scenario and a recommender on ``model`` (the default LM when
    ``None``), fit the second stage and choose on validation users what the scenario serves
    (:func:`~ragrec.finetune.ltr.fit_reranker`), print recommendations + explanations for ``users``
    users, then evaluate the retriever, the zero-shot LLM and the served system on ``eval_users``
    sampled test users."""
    from ragrec import paths
    from ragrec.data import load_prepared, pull
    from ragrec.data.sources import cached_names
    from ragrec.eval.llm import LLMScores, llm_results, sample_users, score_llm
    from ragrec.eval.report import markdown_table
    from ragrec.finetune.config import RerankerConfig
    from ragrec.finetune.ltr import SERVED_NAMES, fit_reranker
    from ragrec.finetune.residual import serving_lists
    from ragrec.inference import DEFAULT_MODEL, Recommender, RecommenderConfig, load_model

    if dataset in cached_names() or Path(dataset).is_dir():
        data = load_prepared(dataset)
    else:
        report = pull(dataset)
        echo(
            f"pulled {dataset} from {report.origin}"
            + (f" ({report.fallback_reason})" if report.fallback_reason else "")
        )
        data = report.data
    echo(f"{data.name}: {len(data.user_ids())} users, {len(data.item_ids())} items; training the retriever (EASE)...")
    scenario = build_scenario(data, "movies", item_noun="movie", embedder=embedder)
    config = RecommenderConfig(model=model or DEFAULT_MODEL)
    echo(f"loading {config.model} ...")
    loaded = loaded or load_model(config.model)
    echo(f"model: {loaded.source} on {loaded.device} ({loaded.dtype})")
    rec = Recommender(loaded, [scenario], config)
    result = DemoReport()
    # What the scenario serves is decided on validation users: the learning-to-rank stage with the
    # LLM's item vectors, the same without them, or the retriever + item priors fusion.
    echo("fitting the second stage (LightGBM over out-of-fold lists, with and without the LLM's item vectors; "
         "a few minutes)...")  # fmt: skip
    run = fit_reranker(scenario, loaded, RerankerConfig(candidates=config.candidates), progress=False)
    scenario.reranker = run.reranker
    if run.reranker is None:
        scenario.config.fusion = run.fusion
    figures = ", ".join(f"{k} {v:.4f}" for k, v in run.valid.items())
    result.served = f"{SERVED_NAMES[run.served]} (chosen on validation NDCG@10 over all validation users: {figures})"
    echo(f"serving: {result.served}")
    demo_users = sorted(scenario.histories, key=lambda u: int(u) if u.isdigit() else u)[:users]
    for user in demo_users:
        r = rec.recommend(user, k=k)
        result.recommendations.append(r)
        recent = ", ".join(scenario.catalog[i].title or i for i in scenario.histories[user].item_ids[-3:])
        echo(f"\nuser {user} (recently: {recent})")
        for it in r.items:
            because = ", ".join(f"{e.title} {100 * e.share:.0f}%" for e in it.evidence[:2])
            echo(f"  {it.rank}. {scenario.catalog[it.item_id].title}  score {it.score:.3f}"
                 + (f"  (because of {because})" if because else ""))  # fmt: skip
        exp = rec.explain(r.items[0].item_id, user)
        result.explanations.append(exp)
        echo(f"  why #1: {exp.text}" + (f"  [{exp.fallback}]" if exp.fallback else ""))
    if demo_users:  # a two-turn chat: a reference to the list, then a request anchored on a title
        user = demo_users[0]
        session = rec.chat(user)
        session.recommendations(k)
        anchor = scenario.catalog[scenario.histories[user].item_ids[-1]].title
        echo(f"\nchat with user {user}:")
        for message in ("why would I like the second one?", f"something like {anchor} but funnier"):
            answer = session.ask(message)
            result.chat.append(answer)
            echo(f"  you> {message}\n  ragrec> {answer.text}" + (f"  [{answer.fallback}]" if answer.fallback else ""))
            if answer.intent != "about":
                echo("         " + "; ".join(scenario.catalog[i.item_id].title or i.item_id for i in answer.items[:3]))
    lists = serving_lists(scenario, S.TEST, None, min(config.candidates, len(scenario.retriever.index)))
    echo(f"\nevaluating what is served on all {len(lists)} test users ({config.candidates} candidates each)...")
    everyone = LLMScores.without_llm(data.name, S.TEST, lists)
    served = [rec.served_scores(scenario, h, c, r, None) for h, c, r in zip(everyone.histories, everyone.candidates,
                                                                         everyone.retriever)]  # fmt: skip
    results = llm_results(everyone, {"retriever (EASE)": None, f"served: {SERVED_NAMES[run.served]}": served})
    sample = sample_users(list(data.targets(S.TEST)), eval_users)
    echo(f"and the zero-shot LLM alone on {len(sample)} sampled test users...")
    scores = score_llm(rec, split=S.TEST, users=sample, progress=False)
    results += llm_results(scores, {"retriever (EASE), same users": None, "zero-shot LLM alone": 0.0})
    result.rows = [r.row() for r in results]
    echo(markdown_table(result.rows, ("users", "ndcg@10", "recall@10", "mrr@10")))
    target = out or paths.home() / "demo" / "recommender"
    result.saved = rec.save_pretrained(target)
    echo(f"\nsaved the recommender to {target} (try: ragrec recommend {target} --user 1)")
    return result
