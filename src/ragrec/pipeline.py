"""Assembling a servable scenario from a prepared dataset.

``build_scenario`` trains a fast retriever (recency-weighted EASE: seconds on ML-100K, within a
few percent of SASRec there; or the one asked for, settings chosen on validation), indexes it,
and optionally embeds item texts for chat. The demo built on it is :mod:`ragrec.demo`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError
from ragrec.registry import Registry

__all__ = ["build_scenario", "SCENARIO_RETRIEVERS", "resolve_retriever", "select_ease", "select_mf", "MF_GRIDS",
           "Trainer", "TRAINERS", "trainer_of", "refit_encoder"]  # fmt: skip
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


@dataclass(frozen=True)
class Trainer:
    """How an encoder is trained under a name (``ragrec retriever train --encoder NAME``, a
    scenario's ``retriever:``): ``fit(data, config, **options)`` with given settings (``config``:
    an instance of ``config_model``, or ``None`` for its defaults) returns the encoder and a report;
    ``select(data, progress=...)``, when there is one, chooses the settings on validation (used when
    none are given). ``fixed`` are settings the name implies (``als``: ``algorithm=als``);
    ``section`` is the encoder's section in a ``--config`` YAML; ``scenario``: a scenario may be
    built on it (``build_scenario``). ``refit(encoder, data, **options)``, when there is one, fits a
    new encoder with ``encoder``'s settings on everything ``data`` knows (train + validation;
    ``ragrec retrain``)."""

    config_model: Any
    section: str
    fit: Callable[..., tuple[Any, dict]]
    select: Callable[..., tuple[Any, dict]] | None = None
    fixed: dict[str, str] = field(default_factory=dict)
    scenario: bool = True
    refit: Callable[..., Any] | None = None


TRAINERS: Registry[Trainer] = Registry("encoder")


def _register_trainers() -> None:
    from ragrec.retrieval import (
        EASEConfig,
        EASEEncoder,
        PopularityEncoder,
        SASRecConfig,
        SASRecEncoder,
        TextEncoder,
        TextEncoderConfig,
    )
    from ragrec.retrieval.mf import MFConfig, MFEncoder

    def sasrec(data, config, *, device="auto", checkpoint_dir=None, progress=True, **_):
        enc, report = SASRecEncoder.fit(data, config, device=device, checkpoint_dir=checkpoint_dir, progress=progress)
        return enc, vars(report)

    def mf(data, config, algorithm, **_):
        config = config or MFConfig(algorithm=algorithm)
        return MFEncoder.fit(data, config), {"config": config.model_dump()}

    known = (S.TRAIN, S.VALID)
    TRAINERS.register("ease", Trainer(
        EASEConfig, "ease", lambda data, config, **_: (EASEEncoder.fit(data, config), {}),
        lambda data, progress=False: select_ease(data, progress=progress),
        refit=lambda enc, data, **_: EASEEncoder.fit(data, enc.config, splits=known)))  # fmt: skip
    TRAINERS.register("sasrec", Trainer(SASRecConfig, "sasrec", sasrec, refit=lambda enc, data, progress=False, **_:
                                        SASRecEncoder.fit(data, enc.config, progress=progress)[0]))  # fmt: skip
    for algorithm in ("als", "bpr"):
        TRAINERS.register(algorithm, Trainer(MFConfig, "mf", lambda data, config, a=algorithm, **kw: mf(data, config, a),
                                             lambda data, progress=False, a=algorithm: select_mf(data, a, progress=progress),
                                             {"algorithm": algorithm},
                                             refit=lambda enc, data, **_: MFEncoder.fit(data, enc.config, splits=known)))  # fmt: skip
    TRAINERS.register("popularity", Trainer(None, "popularity", lambda data, config, **_: (PopularityEncoder.fit(data), {}),
                                            refit=lambda enc, data, **_: PopularityEncoder.fit(data, splits=known)))  # fmt: skip
    TRAINERS.register("text", Trainer(TextEncoderConfig, "text",
                                      lambda data, config, embedder=None, **_: (TextEncoder.fit(data, config, embedder=embedder), {}),
                                      scenario=False, refit=lambda enc, data, embedder=None, **_:
                                      TextEncoder.fit(data, enc.config, embedder=embedder or enc.embedder)))  # fmt: skip
    TRAINERS.register("hybrid", Trainer(None, "hybrid", _fit_hybrid, scenario=False))


def _fit_hybrid(data, config, *, parts=(), **_):
    """A hybrid of saved encoders (``parts``: folders), weights tuned on validation NDCG@10."""
    from ragrec.eval.protocol import eval_users
    from ragrec.retrieval import HybridEncoder, PopularityEncoder, load_encoder

    loaded = [load_encoder(p) for p in parts]
    if len(loaded) < 2:
        raise RagrecError("hybrid needs at least two saved encoder folders (--parts)")
    counts = PopularityEncoder.fit(data).counts
    cold = {i: [int(r) for r in (counts == 0).nonzero()[0]] for i, p in enumerate(loaded) if p.kind == "sasrec"}
    _, hist, targets = eval_users(data, S.VALID)
    grid = [[1.0]] + [[0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]] * (len(loaded) - 1)
    enc, tried = HybridEncoder.tune(loaded, hist, targets, grid, cold=cold)
    return enc, {"weights": enc.weights, "valid_ndcg10": max(t[1] for t in tried)}


_register_trainers()


def trainer_of(encoder: Any) -> Trainer:
    """The registered trainer of ``encoder``'s kind (ALS and BPR: by the algorithm in its config)."""
    return TRAINERS.get(encoder.config.algorithm if encoder.kind == "mf" else encoder.kind)


def refit_encoder(encoder: Any, data: InteractionData, **options: Any) -> Any:
    """A new encoder of ``encoder``'s kind and settings fitted on ``data``'s train + validation
    interactions (SASRec: trained with early stopping on validation, then refitted with it);
    ``options`` go to the trainer's ``refit`` (``embedder``, ``progress``)."""
    trainer = trainer_of(encoder)
    if trainer.refit is None:
        raise RagrecError(f"ragrec retrain cannot refit a {encoder.kind!r} retriever yet; rebuild it with "
                          "`ragrec retriever train` and `ragrec recommender build`")  # fmt: skip
    return trainer.refit(encoder, data, **options)


SCENARIO_RETRIEVERS = ("auto", *(n for n in TRAINERS.in_order() if TRAINERS.get(n).scenario))


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
    from ragrec.retrieval import Retriever, TextEncoder

    if not data.has_split:
        raise RagrecError(f"dataset {data.name!r} has no split; prepare it with one")
    trainer = TRAINERS.get(resolve_retriever(encoder, len(data.item_ids())))
    choice = None
    if trainer.select is not None:  # settings chosen on validation, reported in the scenario
        enc, choice = trainer.select(data, progress=progress)
    else:
        enc, _ = trainer.fit(data, None, progress=progress)
    retriever = Retriever.build(enc, data, factory=factory, scenario=name)
    text_enc = TextEncoder.fit(data, embedder=embedder) if text else None
    config = ScenarioConfig(name=name, item_noun=item_noun, retriever_choice=choice)
    return Scenario(config, data, retriever, text_enc)
