"""Assembling a servable scenario from a prepared dataset, and the README's demo.

``build_scenario`` trains a fast retriever (recency-weighted EASE: seconds on ML-100K, within a
few percent of SASRec there), indexes it, and optionally embeds item texts for chat.
``run_demo`` is ``make demo``: ML-100K + the default model, recommendations with explanations
for a few users, and a small evaluation table (retriever vs retriever + zero-shot LLM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError

__all__ = ["build_scenario", "run_demo", "DemoReport", "SCENARIO_RETRIEVERS", "resolve_retriever", "select_ease",
           "select_mf", "MF_GRIDS"]  # fmt: skip

SCENARIO_RETRIEVERS = ("auto", "ease", "sasrec", "als", "bpr", "popularity")
# The grid a scenario's EASE retriever is chosen from on validation (l2 fits once each; decay only
# weighs the query). On ML-100K's RecBole split it picks l2 300, decay 0.9 (benchmarks/results/retrieval.md).
EASE_L2_GRID = (100.0, 300.0, 1000.0, 3000.0)
EASE_DECAY_GRID = (0.6, 0.8, 0.9, 1.0)
EASE_VALID_USERS = 5000  # validation users sampled (seeded) on larger datasets
# The grids a scenario's ALS / BPR first stage is chosen from on validation (each setting trains
# once; the fold-in's recency decay only changes the query).
MF_GRIDS: dict[str, list[dict]] = {
    "als": [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (1.0, 10.0, 50.0, 200.0)
            for a in (1.0, 10.0)],
    "bpr": [{"factors": f, "learning_rate": lr, "regularization": r, "iterations": it} for f in (64, 128)
            for lr in (0.01, 0.05) for r in (0.001, 0.01, 0.05) for it in (100, 300)],
}  # fmt: skip
MF_DECAYS = (1.0, 0.9, 0.7)


def select_ease(
    data: InteractionData,
    l2_grid: tuple[float, ...] = EASE_L2_GRID,
    decays: tuple[float, ...] = EASE_DECAY_GRID,
    *,
    max_users: int = EASE_VALID_USERS,
    progress: bool = False,
):
    """Recency EASE fitted on the train split with the (l2, decay) of the grids that scores the
    best validation NDCG@10 (full ranking, history masked; first best on ties). Returns the
    encoder and a report ``{"l2", "decay", "valid_ndcg@10", "valid_users", "grid": [...]}``."""
    from ragrec.retrieval import EASEConfig, EASEEncoder

    def fit(params: dict) -> EASEEncoder:
        return EASEEncoder.fit(data, EASEConfig(**params), splits=(S.TRAIN,))

    def with_decay(base: EASEEncoder, decay: float) -> EASEEncoder:
        return EASEEncoder(base.item_ids, base.weights, base.config.model_copy(update={"decay": decay}))

    grid = [{"l2": l2} for l2 in l2_grid]
    return _select_on_valid(data, grid, fit, with_decay, decays, ("l2", "decay"), max_users, progress, "EASE l2 grid")


def _select_on_valid(data, grid, fit, with_decay, decays, keys, max_users: int, progress: bool, desc: str):
    """The encoder of ``grid`` x ``decays`` with the best validation NDCG@10 (full ranking, history
    masked, on up to ``max_users`` sampled validation users; first best on ties): ``fit(params)``
    trains once per setting, ``with_decay(encoder, decay)`` only changes its query. Returns it and a
    report of its config's ``keys``, the figure, the users and every setting tried."""
    from ragrec.eval.llm import sample_users
    from ragrec.eval.protocol import evaluate_encoder

    users = sample_users(sorted(data.target_sets(S.VALID)), max_users)
    best, tried = None, []
    for params in tqdm(grid, desc=desc, disable=not progress, leave=False):
        base = fit(params)
        for decay in decays:
            enc = with_decay(base, decay)
            ndcg = evaluate_encoder(enc, data, split=S.VALID, users=users, list_k=0).metrics((10,))["ndcg@10"]
            tried.append({**params, "decay": decay, "valid_ndcg@10": round(ndcg, 6)})
            if best is None or ndcg > best[0]:
                best = (ndcg, enc)
    if best is None:
        raise RagrecError("empty settings grid")
    ndcg, enc = best
    chosen = enc.config.model_dump()
    return enc, {**{k: chosen[k] for k in keys}, "valid_ndcg@10": round(ndcg, 6), "valid_users": len(users),
                 "grid": tried}  # fmt: skip


def select_mf(
    data: InteractionData,
    algorithm: str,
    grid: list[dict] | None = None,
    decays: tuple[float, ...] = MF_DECAYS,
    *,
    max_users: int = EASE_VALID_USERS,
    progress: bool = False,
):
    """ALS or BPR (``implicit``) fitted on the train split with the settings of ``grid`` (default
    :data:`MF_GRIDS`) and fold-in decay that score the best validation NDCG@10 (full ranking, history
    masked; first best on ties). Returns the encoder and a report like :func:`select_ease`'s."""
    from ragrec.retrieval.mf import MFConfig, MFEncoder

    def fit(params: dict) -> MFEncoder:
        return MFEncoder.fit(data, MFConfig(algorithm=algorithm, **params), splits=(S.TRAIN,))

    def with_decay(base: MFEncoder, decay: float) -> MFEncoder:
        return MFEncoder(base.item_ids, base.factors, base.config.model_copy(update={"decay": decay}))

    keys = ("algorithm", "factors", "regularization", "alpha", "iterations", "learning_rate", "decay")
    return _select_on_valid(data, grid or MF_GRIDS[algorithm], fit, with_decay, decays, keys, max_users, progress,
                            f"{algorithm} grid")  # fmt: skip


def resolve_retriever(name: str, n_items: int) -> str:
    """The retriever ``name`` of :data:`SCENARIO_RETRIEVERS` stands for over a catalog of ``n_items``:
    ``auto`` is EASE up to the catalog size EASE accepts (``EASEConfig.max_items``), SASRec above."""
    if name not in SCENARIO_RETRIEVERS:
        raise RagrecError(f"unknown scenario encoder {name!r}; valid: {', '.join(SCENARIO_RETRIEVERS)}")
    if name == "auto":
        from ragrec.retrieval import EASEConfig  # imported here: ragrec.retrieval loads torch and faiss

        return "ease" if n_items <= EASEConfig().max_items else "sasrec"
    return name


def build_scenario(
    data: InteractionData,
    name: str,
    *,
    item_noun: str = "item",
    encoder: str = "auto",
    text: bool = True,
    embedder=None,
    factory: str = "Flat",
    progress: bool = True,
):
    """A :class:`~ragrec.inference.Scenario` over ``data`` (which needs a split).

    ``encoder``: ``ease`` (recency-weighted EASE with l2 and decay chosen on this dataset's
    validation targets by :func:`select_ease`, recorded in ``scenario.retriever_choice``; a dense
    N x N model), ``sasrec`` (trained on the train split with early
    stopping on validation, then refitted with it; any catalog size), ``als`` / ``bpr`` (matrix
    factorisation through ``implicit``, settings chosen on validation by :func:`select_mf`, users
    folded in from their history), ``popularity``, or ``auto``:
    EASE up to ``EASEConfig.max_items`` (20,000) items, SASRec above. ``text`` adds a MiniLM text encoder
    for chat queries.
    """
    from ragrec.inference import Scenario, ScenarioConfig
    from ragrec.retrieval import PopularityEncoder, Retriever, SASRecEncoder, TextEncoder

    if not data.has_split:
        raise RagrecError(f"dataset {data.name!r} has no split; prepare it with one")
    encoder = resolve_retriever(encoder, len(data.item_ids()))
    choice = None
    if encoder == "ease":
        enc, choice = select_ease(data, progress=progress)
    elif encoder in ("als", "bpr"):
        enc, choice = select_mf(data, encoder, progress=progress)
    elif encoder == "sasrec":
        enc, _ = SASRecEncoder.fit(data, progress=progress)
    else:
        enc = PopularityEncoder.fit(data)
    retriever = Retriever.build(enc, data, factory=factory, scenario=name)
    text_enc = TextEncoder.fit(data, embedder=embedder) if text else None
    config = ScenarioConfig(name=name, item_noun=item_noun, retriever_choice=choice)
    return Scenario(config, data, retriever, text_enc)


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
