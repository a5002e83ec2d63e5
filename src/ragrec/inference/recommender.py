"""``Recommender``: retrieval + LLM, several scenarios on one base model, one typed API.

A recommender holds one causal LM and, per scenario, a catalog (the scenario's
:class:`~ragrec.data.InteractionData`), a :class:`~ragrec.retrieval.Retriever`, optionally a text
encoder (chat queries), prompt templates (the scenario's own, else ``default``) and optionally a
LoRA adapter. Requests name their scenario; the scenario's adapter is switched on for them (the
base model alone serves scenarios without one), and batches are formed per scenario.

Saved layout (``save_pretrained``; the base model is referenced by name, not copied)::

    recommender.json                    config + scenario list
    scenarios/<name>/scenario.json      item noun, fusion weight or learned fusion weights
    scenarios/<name>/data/              the catalog and histories (Parquet)
    scenarios/<name>/retriever/         encoder + FAISS index
    scenarios/<name>/text/              text encoder (optional)
    scenarios/<name>/templates/*.yaml   the scenario's own templates (optional)
    scenarios/<name>/adapter/           peft LoRA adapter, safetensors (optional)
    scenarios/<name>/reranker/          learning-to-rank stage, LightGBM text + LLM item vectors (optional)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragrec.errors import RagrecError, UnknownNameError
from ragrec.inference.backends import Backend, make_backend
from ragrec.inference.config import RecommenderConfig
from ragrec.inference.evidence import evidence_for
from ragrec.inference.explain import Explainer, Explanation, ExplanationStream
from ragrec.inference.fusion import _standardise
from ragrec.inference.generate import ConstrainedGenerator, TitleTrie
from ragrec.inference.host import ModelHost
from ragrec.inference.models import LoadedModel, load_model
from ragrec.inference.optimise import ListRules, calibrated, capped, category_mix, long_tail, mmr
from ragrec.inference.persistence import load_parts, save_recommender
from ragrec.inference.rank import LetterRanker
from ragrec.inference.rate import RatingPrediction, RatingPredictor
from ragrec.inference.scenario import Scenario, ScenarioConfig, _rules, _Shaping, _unknown_items
from ragrec.prompts import PromptTemplate, builtin_registry
from ragrec.ranking import RRF_POOL, rrf_add
from ragrec.retrieval.retriever import MAX_K
from ragrec.tasks import task_names
from ragrec.types import Candidate, Item, RankedItem, UserHistory

__all__ = [
    "Recommender",
    "RecommenderConfig",
    "Scenario",
    "ScenarioConfig",
    "Recommendation",
    "TaskAnswer",
    "fuse_scores",
    "shown_order",
    "save_recommender",
    "load_parts",
]

RULES_DEPTH = 5  # with business rules, retrieve up to this many times the candidates to refill the list


@dataclass(frozen=True)
class Recommendation:
    """A ranked list for one request. ``fallback`` says when the candidates did not come from the
    user's history (unknown user, empty history); ``notes`` record any other adjustment."""

    user_id: str | None
    scenario: str
    task: str
    items: tuple[RankedItem, ...]
    fallback: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


@dataclass(frozen=True)
class TaskAnswer:
    """The answer of a free-text task run by :meth:`Recommender.complete`: ``text`` (complete
    sentences) and what the model wrote (``model_text``)."""

    task: str
    scenario: str
    user_id: str | None
    text: str
    model_text: str
    fallback: str | None = None
    notes: tuple[str, ...] = ()


def shown_order(item_ids: Sequence[str]) -> np.ndarray:
    """A fixed shuffle of a candidate list (indices into it), the same for the same list on every
    machine and run: seeded by a hash of the ids, so training and serving show a list alike."""
    seed = int.from_bytes(hashlib.blake2b("\x1f".join(item_ids).encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).permutation(len(item_ids))


def fuse_scores(llm: np.ndarray, retriever: np.ndarray, weight: float) -> np.ndarray:
    """``z(llm) + weight * z(retriever)`` over one user's candidates (z: standardised per user),
    so the weight means the same whatever the scales; ``weight`` 0 is the LLM alone."""
    if weight == 0:
        return np.asarray(llm, dtype=float)
    return _standardise(np.asarray(llm, dtype=float)) + weight * _standardise(np.asarray(retriever, dtype=float))


@dataclass
class _Request:
    user_id: str | None
    history: UserHistory
    fallback: str | None


class Recommender:
    """The inference API (see module docstring). Build with :meth:`from_pretrained` or from parts."""

    def __init__(
        self, loaded: LoadedModel, scenarios: Sequence[Scenario], config: RecommenderConfig | None = None
    ) -> None:
        if not scenarios:
            raise RagrecError("a recommender needs at least one scenario")
        names = [s.name for s in scenarios]
        if len(set(names)) != len(names):
            raise RagrecError(f"duplicate scenario names in {names}")
        self.host = ModelHost(loaded, {s.name: s.adapter for s in scenarios if s.adapter is not None})
        self.scenarios = {s.name: s for s in scenarios}
        self.builtin = builtin_registry()
        self.config = config or RecommenderConfig()  # also builds the prompt budget (see the setter)

    @property
    def config(self) -> RecommenderConfig:
        return self._config

    @config.setter
    def config(self, config: RecommenderConfig) -> None:
        """A new config (frozen; ``model_copy(update=...)``) replaces everything derived from the old
        one (the prompt budget, rankers with their batch size, title tries), so nothing stale is used.
        The model itself is not reloaded: ``model``, ``quantization``, ``dtype`` and ``device`` apply
        at :meth:`from_pretrained`."""
        if not isinstance(config, RecommenderConfig):
            raise RagrecError(f"config must be a RecommenderConfig, got {type(config).__name__}")
        config = RecommenderConfig(**config.model_dump())  # model_copy(update=...) does not validate: do it here
        with self.host.lock:
            self._config = config
            context = getattr(self.loaded.model.config, "max_position_embeddings", None)
            self.budget = config.budget(context)
            self._tries: dict[str, TitleTrie] = {}
            self._rankers: dict[str, LetterRanker] = {}
            self._backend: Backend | None = None
            self._bound: dict[tuple[str, str | None], Backend] = {}  # (scenario, adapter) -> bound backend

    # ------------------------------------------------------------------ scenarios and adapters
    @property
    def default_scenario(self) -> str:
        return next(iter(self.scenarios))

    def scenario(self, name: str | None = None) -> Scenario:
        """The named scenario (the first one when ``None``); the error lists the valid names."""
        name = name or self.default_scenario
        if name not in self.scenarios:
            raise UnknownNameError("scenario", name, list(self.scenarios))
        return self.scenarios[name]

    def template(self, scenario: Scenario, task: str) -> PromptTemplate:
        """The scenario's own template for ``task``, else the built-in one (scenario, then ``default``)."""
        try:
            return scenario.templates.get(scenario.name, task)
        except UnknownNameError:
            return self.builtin.get(scenario.name, task)

    @contextlib.contextmanager
    def use(self, scenario: Scenario) -> Iterator[None]:
        """Hold the model for ``scenario``: its adapter on (or every adapter off), others waiting."""
        with self.host.use(scenario.name if scenario.adapter is not None else None):
            yield

    @property
    def loaded(self) -> LoadedModel:
        return self.host.loaded

    def backend_for(self, scenario: Scenario) -> Backend:
        """The model backend (``config.backend``, built once per config) that scores and writes for
        ``scenario``, bound to its LoRA adapter (a backend that cannot run adapters refuses one)."""
        if self._backend is None:
            self._backend = make_backend(self.config.backend, self.loaded, batch_size=self.config.batch_size,
                                         max_tokens=self.budget.max_tokens, model=self.config.model,
                                         trust_remote_code=self.config.trust_remote_code,
                                         **self.config.backend_options)  # fmt: skip
        key = (scenario.name, None if scenario.adapter is None else str(scenario.adapter))
        if key not in self._bound:  # binding may convert or hash the adapter: once, not per request
            self._bound[key] = self._backend.bind(scenario.name, scenario.adapter)
        return self._bound[key]

    @property
    def active_adapter(self) -> str | None:
        """The adapter in use for the last request (``None``: the base model)."""
        return self.host.active

    @property
    def adapter_names(self) -> dict[str, str]:
        """Scenario -> its peft adapter name (the scenario's name when loaded)."""
        return self.host.adapter_names

    # ------------------------------------------------------------------ requests
    def _requests(
        self, sc: Scenario, user_ids: Sequence[str] | None, histories: Sequence[Sequence[str]] | None
    ) -> list[_Request]:
        if (user_ids is None) == (histories is None):
            raise RagrecError("pass either user ids or histories")
        out = []
        if user_ids is not None:
            for u in user_ids:
                if u in sc.histories:
                    out.append(_Request(u, sc.histories[u], None))
                else:
                    out.append(_Request(u, UserHistory(str(u), ()), f"unknown user {u!r}: popularity candidates"))
        else:
            assert histories is not None
            for h in histories:
                h = list(h)
                unknown = [i for i in h if i not in sc.catalog]
                if unknown:
                    raise RagrecError(_unknown_items(unknown, sc))
                out.append(
                    _Request(None, UserHistory("", tuple(h)), None if h else "empty history: popularity candidates")
                )
        return out

    def _request(self, sc: Scenario, user_id: str | None, history: Sequence[str] | None) -> _Request:
        """One request by ``user_id`` or by ``history`` (exactly one of them)."""
        if (user_id is None) == (history is None):
            raise RagrecError("pass user_id or history")
        return self._requests(sc, None if user_id is None else [user_id], None if history is None else [history])[0]

    def _retrieve(self, sc: Scenario, requests: Sequence[_Request], k: int) -> list[list[Candidate]]:
        results = sc.retriever.retrieve(histories=[list(r.history.item_ids) for r in requests], k=k)
        for req, res in zip(requests, results):
            if res.fallback and req.fallback is None:
                req.fallback = res.fallback
        return [list(r.candidates) for r in results]

    def history_items(self, sc: Scenario, ids: Sequence[str]) -> list[Item]:
        """The catalog items of ``ids`` (ids not in the catalog are skipped), in order."""
        return [sc.catalog[i] for i in ids if i in sc.catalog]

    def score_candidates(
        self, scenario: str | Scenario, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """LLM scores (label log-probabilities, permutation-averaged) of each user's candidates, in
        candidate order. The building block of ``recommend`` and of evaluation."""
        sc = scenario if isinstance(scenario, Scenario) else self.scenario(scenario)
        if sc.name not in self._rankers:  # kept: it caches the label token ids
            self._rankers[sc.name] = LetterRanker(self.loaded, self.template(sc, "rank"), budget=self.budget,
                                                  batch_size=self.config.batch_size, backend=self.backend_for(sc))  # fmt: skip
        ranker = self._rankers[sc.name]
        hist_items = [self.history_items(sc, h) for h in histories]
        shown = [[c[j] for j in shown_order(c)] if sc.config.candidate_order == "shuffled" else c for c in candidates]
        cand_items = [[sc.item(i) for i in c] for c in shown]
        with self.use(sc):
            ranked = ranker.rank(hist_items, cand_items, item_noun=sc.config.item_noun,
                                 permutations=self.config.permutations)  # fmt: skip
        out = []
        for cands, rk in zip(candidates, ranked):
            by_id = {r.item_id: r.score for r in rk}
            out.append(np.array([by_id[i] for i in cands]))
        return out

    def recommend_batch(
        self,
        user_ids: Sequence[str] | None = None,
        *,
        histories: Sequence[Sequence[str]] | None = None,
        scenario: str | None = None,
        k: int = 10,
        task: str = "rank",
        diversity: float | None = None,
        rules: ListRules | None = None,
        long_tail: float | None = None,
        calibration: float | None = None,
        **rule_fields: Any,
    ) -> list[Recommendation]:
        """``recommend`` for many users of one scenario at once (batched LLM passes)."""
        sc = self.scenario(scenario)
        shaping = _Shaping.of(sc, diversity, long_tail, calibration)
        rules = _rules(sc.config.rules if rules is None else rules, rule_fields)
        if task not in task_names(recommend=True):
            raise UnknownNameError("recommend task", task, list(task_names(recommend=True)))
        n = self.config.candidates
        if not 1 <= k <= n:
            raise RagrecError(f"k must be between 1 and {n} (the candidates the LLM ranks; see `candidates`), got {k}")
        requests = self._requests(sc, user_ids, histories)
        if not requests:
            return []
        cands, rule_notes = self._allowed(sc, requests, n, rules)
        if task == "generate":
            return [self._generate_one(sc, r, c, k) for r, c in zip(requests, cands)]
        live = [j for j, cs in enumerate(cands) if cs]  # a user who has seen everything gets nothing to rank
        if sc.reranker is not None or (sc.config.fusion is not None and not sc.config.fusion.uses_llm):  # no LLM pass
            llm = {j: None for j in live}
        else:
            llm = dict(zip(live, self.score_candidates(sc, [list(requests[j].history.item_ids) for j in live],
                                                       [[c.item_id for c in cands[j]] for j in live])))  # fmt: skip
        out = []
        for j, (req, cs) in enumerate(zip(requests, cands)):
            if j not in llm:
                why = rule_notes[j] or ("no unseen candidates",)
                out.append(Recommendation(req.user_id, sc.name, "rank", (), req.fallback, why))
                continue
            retr = np.array([c.score for c in cs])
            fused = self.served_scores(sc, req.history.item_ids, [c.item_id for c in cs], retr, llm[j])
            order = self._final_order(sc, req.history.item_ids, [c.item_id for c in cs], fused, k, shaping, rules)
            ev = self.evidence(sc, req, [cs[i].item_id for i in order])
            items = tuple(
                RankedItem(cs[i].item_id, float(fused[i]), r, None, float(retr[i]), e)
                for r, (i, e) in enumerate(zip(order, ev), 1)
            )
            out.append(Recommendation(req.user_id, sc.name, "rank", items, req.fallback, rule_notes[j]))
        return out

    def _allowed(
        self, sc: Scenario, requests: Sequence[_Request], n: int, rules: ListRules | None
    ) -> tuple[list[list[Candidate]], list[tuple[str, ...]]]:
        """Each request's first ``n`` retrieved candidates that ``rules`` allow, retrieving deeper
        (up to ``RULES_DEPTH`` x ``n``) so that forbidden items are replaced; notes say how many were
        removed and when fewer than ``n`` remain."""
        size = len(sc.retriever.index)
        if rules is None or not rules.filters:
            return self._retrieve(sc, requests, min(n, size)), [() for _ in requests]
        depth = min(size, MAX_K, n * RULES_DEPTH)
        cands, notes = [], []
        for cs in self._retrieve(sc, requests, depth):
            keep = rules.keep([c.item_id for c in cs], sc.catalog)
            kept = [cs[j] for j in keep[:n]]
            cands.append(kept)
            looked = keep[n - 1] + 1 if len(kept) == n else len(cs)  # retrieved candidates read to fill the list
            if not kept:
                notes.append((f"business rules removed every one of the {len(cs)} retrieved candidates",))
            elif len(kept) < n:
                notes.append((f"business rules removed {looked - len(kept)} of the first {looked} retrieved candidates",
                              f"only {len(kept)} allowed candidates in the first {len(cs)} retrieved"))  # fmt: skip
            elif looked > n:
                notes.append((f"business rules removed {looked - n} of the first {looked} retrieved candidates",))
            else:
                notes.append(())
        return cands, notes

    def _final_order(
        self,
        sc: Scenario,
        history: Sequence[str],
        ids: Sequence[str],
        scores: np.ndarray,
        k: int,
        shaping: _Shaping,
        rules: ListRules | None,
    ) -> list[int]:
        """The top ``k`` of ``scores`` after the popularity penalty (``long_tail``), re-ordered by MMR
        (``diversity``) or toward the history's category mix (``calibration``), then capped per
        category when ``rules.max_per_category`` is set (:mod:`ragrec.inference.optimise`)."""
        cap = rules.max_per_category if rules is not None else None
        if shaping.long_tail > 0:
            scores = long_tail(scores, [sc.priors.popularity.get(i, 0) for i in ids], shaping.long_tail)
        if shaping.diversity > 0:
            order = mmr(scores, sc.item_vectors(ids), len(ids), shaping.diversity)
        elif shaping.calibration > 0:
            mix = category_mix([sc.catalog[i].categories for i in history if i in sc.catalog])
            order = calibrated(scores, [sc.catalog[i].categories for i in ids], mix, len(ids), shaping.calibration)
        else:
            order = list(np.argsort(-scores, kind="stable"))
        if cap is not None:
            return capped(order, [sc.catalog[i].categories for i in ids], cap, k)
        return order[:k]

    @staticmethod
    def served_scores(
        sc: Scenario, history: Sequence[str], candidates: Sequence[str], retriever: np.ndarray, llm: np.ndarray | None
    ) -> np.ndarray:
        """The scores ``rank`` orders ``candidates`` by: the scenario's reranker, else its learned
        fusion, else the LLM's scores fused with the retriever's by ``fusion_weight`` (``llm`` may be
        ``None`` when the first two need no LLM)."""
        if sc.reranker is not None:
            return sc.reranker.score(sc.rerank_features.rows(history, candidates, retriever, sc.reranker.features))
        if sc.config.fusion is not None:
            fusion = sc.config.fusion
            return fusion.score(
                sc.priors.features(history, candidates, retriever, llm, fusion.names, fusion.max_history)
            )
        return fuse_scores(llm, retriever, sc.config.fusion_weight)

    def evidence(self, sc: Scenario, req: _Request, item_ids: Sequence[str]) -> list[tuple]:
        """The history items behind each of ``item_ids`` (:mod:`ragrec.inference.evidence`);
        empty for a request answered by a fallback (its candidates did not come from a history)."""
        if req.fallback is not None or not req.history.item_ids or not self.config.evidence:
            return [() for _ in item_ids]
        return evidence_for(sc.retriever.encoder, sc.catalog, req.history.item_ids, item_ids, self.config.evidence)

    def recommend(
        self,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        scenario: str | None = None,
        k: int = 10,
        task: str = "rank",
        diversity: float | None = None,
        rules: ListRules | None = None,
        long_tail: float | None = None,
        calibration: float | None = None,
        **rule_fields: Any,
    ) -> Recommendation:
        """Top-``k`` items for a known user (``user_id``) or an explicit ``history`` of item ids.

        ``rules`` (:class:`~ragrec.inference.optimise.ListRules`; default: the scenario's) remove
        forbidden items from the candidates before anything ranks them and refill the list from
        deeper in the retrieval; a rule can also be given by its field name, e.g.
        ``exclude_categories=["Horror"]`` or ``year_min=1990`` (merged over ``rules``; unknown names
        raise). The final list (each 0-1; default: the scenario's): ``long_tail`` penalises popular
        items, ``diversity`` re-orders by maximal marginal relevance over the retriever's item
        embeddings, ``calibration`` re-orders toward the category mix of the history (not with
        ``diversity``). See :mod:`ragrec.inference.optimise`.

        ``task``: ``rank`` (the LLM scores the retrieved candidates; fused with the retriever's
        score by the scenario's ``fusion_weight``, or by its learned ``fusion``) or ``generate`` (the LLM writes titles,
        constrained to the candidates). An unknown user gets popularity candidates, reported in
        ``fallback``; unknown scenario, task or item ids raise errors naming the valid ones.
        """
        if (user_id is None) == (history is None):
            raise RagrecError("pass user_id or history")
        users = None if user_id is None else [user_id]
        return self.recommend_batch(users, histories=None if history is None else [history], scenario=scenario,
                                    k=k, task=task, diversity=diversity, rules=rules, long_tail=long_tail,
                                    calibration=calibration, **rule_fields)[0]  # fmt: skip

    def search(
        self,
        query: str,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        scenario: str | None = None,
        k: int = 10,
    ) -> Recommendation:
        """Catalog items for a free-text ``query``, found by the scenario's text encoder over the
        whole catalog (items added since training included). With a user (``user_id`` or
        ``history``) the text ranks are fused with the retriever's ranks for that user
        (reciprocal-rank fusion) and items they have seen are left out. Scores: cosine similarity
        to the query, or the fused score. No LLM call."""
        from ragrec.data.text import clean_text
        from ragrec.prompts import sanitize

        sc = self.scenario(scenario)
        if sc.text is None:
            raise RagrecError(f"scenario {sc.name!r} has no text encoder; text search needs one")
        text = clean_text(query)
        if not text:
            raise RagrecError("empty search query")
        if not 1 <= k <= MAX_K:
            raise RagrecError(f"k must be between 1 and {MAX_K}, got {k}")
        q = sanitize(text, self.budget.max_user_chars)
        notes = (
            (f"query cut from {len(text)} to {self.budget.max_user_chars} characters",) if len(text) > len(q) else ()
        )
        cosine = sc.text.encode_text([q])[0] @ sc.text.vectors.T  # (N,) similarity of every item to the query
        order = [sc.text.item_ids[j] for j in np.argsort(-cosine, kind="stable") if sc.text.item_ids[j] in sc.catalog]
        req = None if user_id is None and history is None else self._request(sc, user_id, history)
        if req is None:
            by_id = dict(zip(sc.text.item_ids, cosine.tolist()))
            items = tuple(RankedItem(i, float(by_id[i]), r) for r, i in enumerate(order[:k], 1))
            return Recommendation(None, sc.name, "search", items, None, notes)
        seen = set(req.history.item_ids)
        pool = min(RRF_POOL, len(sc.retriever.index))
        fused = rrf_add({}, [i for i in order if i not in seen][:pool])
        if req.fallback is None and req.history.item_ids:
            rrf_add(fused, (c.item_id for c in self._retrieve(sc, [req], pool)[0]))  # candidates in rank order
        ranked = sorted(fused, key=lambda i: -fused[i])[:k]
        ev = self.evidence(sc, req, ranked)
        items = tuple(RankedItem(i, fused[i], r, None, None, e) for r, (i, e) in enumerate(zip(ranked, ev), 1))
        return Recommendation(req.user_id, sc.name, "search", items, req.fallback, notes)

    def complete(
        self,
        task: str,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        scenario: str | None = None,
        item_id: str | None = None,
        **values: str,
    ) -> TaskAnswer:
        """Run a free-text task (a :mod:`ragrec.tasks` registration with ``output="text"``) from its
        template: the template gets ``{history}`` (the user's recent items), ``{item_noun}``, with
        ``item_id`` also ``{item}``, and any ``values`` (sanitised: data, never template syntax).
        The generic runner a new task gets from one registration plus its template; explain and
        chat have their own, with grounding. Returns the text (complete sentences only)."""
        from ragrec.data.text import render_item_text
        from ragrec.inference.explain import generate_text
        from ragrec.prompts import count_tokens, fit_history, history_block, sanitize
        from ragrec.tasks import TASKS

        spec = TASKS.get(task)
        if spec.output != "text":
            raise RagrecError(f"task {task!r} answers with {spec.output!r}; complete() runs text tasks")
        sc = self.scenario(scenario)
        template = self.template(sc, task)
        req = self._request(sc, user_id, history)
        hist = self.history_items(sc, req.history.item_ids)
        extra = {k: sanitize(str(v), self.budget.max_user_chars) for k, v in values.items()}
        if item_id is not None:
            extra["item"] = sanitize(render_item_text(sc.item(item_id)), self.budget.max_item_chars)
        missing = sorted(template.variables - {"item_noun", "history", *extra})
        if missing:
            raise RagrecError(f"template {sc.name}/{task} needs {missing}; pass them as keyword arguments"
                              + (" (item: item_id=...)" if "item" in missing else ""))  # fmt: skip
        messages, _ = fit_history(
            template,
            lambda n: {
                "item_noun": sc.config.item_noun,
                **extra,
                "history": history_block(hist[len(hist) - n :] if n else [], self.budget),
            },  # fmt: skip
            lambda m: count_tokens(self.loaded.tokenizer, m),
            self.budget,
        )
        with self.use(sc):
            text = generate_text(self.backend_for(sc), messages, template.output, sc.matcher.sentences)
        done, rest = sc.matcher.sentences(text)
        kept = " ".join(done) if done else ""
        notes = ("the model's text ended mid-sentence; the unfinished part is not shown",) if rest else ()
        return TaskAnswer(task, sc.name, req.user_id, kept, text, req.fallback, notes)

    def _generate_one(self, sc: Scenario, req: _Request, allowed: Sequence[Candidate] | None, n: int) -> Recommendation:
        gen = ConstrainedGenerator(self.loaded, self.template(sc, "generate"), budget=self.budget,
                                   backend=self.backend_for(sc))  # fmt: skip
        if allowed is None:  # the whole catalog, minus what the user has seen
            if sc.name not in self._tries:
                self._tries[sc.name] = TitleTrie(
                    self.loaded.tokenizer, list(sc.catalog.values()), self.budget.max_item_chars
                )
            target: Sequence[Item] | TitleTrie = self._tries[sc.name]
        else:
            target = [sc.item(c.item_id) for c in allowed]
        history = self.history_items(sc, req.history.item_ids)
        with self.use(sc):
            out = gen.generate(history, target, n=n, item_noun=sc.config.item_noun, exclude=history)
        seen = set(req.history.item_ids)  # an item sharing its title with a seen one is excluded with it
        kept = [i for i in out.item_ids if i not in seen]
        notes = (f"the model wrote {len(kept)} of {n} titles before ending",) if len(kept) < n else ()
        ev = self.evidence(sc, req, kept)
        items = tuple(RankedItem(i, -float(r), r, None, None, e) for r, (i, e) in enumerate(zip(kept, ev), 1))
        return Recommendation(req.user_id, sc.name, "generate", items, req.fallback, notes)

    def generate(
        self,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        scenario: str | None = None,
        n: int = 5,
        over: Literal["catalog", "candidates"] = "catalog",
    ) -> Recommendation:
        """The LLM writes ``n`` titles, decoded under a trie of the catalog's titles (``over="catalog"``)
        or of the retrieved candidates; every item returned exists (score = minus its position)."""
        sc = self.scenario(scenario)
        if not 1 <= n <= self.config.candidates:
            raise RagrecError(f"n must be between 1 and {self.config.candidates}, got {n}")
        if over not in ("catalog", "candidates"):
            raise UnknownNameError("generation scope", over, ["catalog", "candidates"])
        req = self._request(sc, user_id, history)
        allowed = None
        if over == "candidates":
            allowed = self._retrieve(sc, [req], min(self.config.candidates, len(sc.retriever.index)))[0]
        return self._generate_one(sc, req, allowed, n)

    def explain(
        self,
        item_id: str,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        scenario: str | None = None,
        stream: bool = False,
    ) -> Explanation | ExplanationStream:
        """Why ``item_id`` suits the user, grounded in their history (see :class:`Explanation`).

        With ``stream=True`` returns an :class:`ExplanationStream`: iterate for text pieces, then
        read ``.explanation``."""
        sc = self.scenario(scenario)
        item = sc.item(item_id)
        req = self._request(sc, user_id, history)
        explainer = Explainer(self.loaded, self.template(sc, "explain"), sc.matcher, budget=self.budget,
                              backend=self.backend_for(sc))  # fmt: skip
        hist = self.history_items(sc, req.history.item_ids)
        evidence = self.evidence(sc, req, [item_id])[0]
        if stream:
            return explainer.stream(hist, item, item_noun=sc.config.item_noun, evidence=evidence,
                                    guard=lambda: self.use(sc))  # fmt: skip
        with self.use(sc):
            return explainer.explain(hist, item, item_noun=sc.config.item_noun, evidence=evidence)

    def predict_rating(
        self,
        item_ids: Sequence[str],
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        ratings: Sequence[float | None] | None = None,
        scenario: str | None = None,
    ) -> list[RatingPrediction]:
        """Expected 1-5 rating of each item (expectation over the digit tokens)."""
        sc = self.scenario(scenario)
        items = [sc.item(i) for i in item_ids]
        req = self._request(sc, user_id, history)
        if ratings is not None and len(ratings) != len(req.history):
            raise RagrecError(f"{len(ratings)} ratings for a history of {len(req.history)} items")
        given = ratings if ratings is not None else (req.history.ratings or [None] * len(req.history))
        predictor = RatingPredictor(self.loaded, self.template(sc, "rate"), budget=self.budget,
                                    backend=self.backend_for(sc))  # fmt: skip
        with self.use(sc):
            return predictor.predict(self.history_items(sc, req.history.item_ids), list(given), items,
                                     item_noun=sc.config.item_noun)  # fmt: skip

    def chat(self, user_id: str | None = None, *, history: Sequence[str] | None = None, scenario: str | None = None):
        """A :class:`~ragrec.inference.chat.ChatSession` for follow-up questions by this user."""
        from ragrec.inference.chat import ChatSession

        sc = self.scenario(scenario)
        req = self._request(sc, user_id, history)
        return ChatSession(self, sc, req.history, user_id=req.user_id, fallback=req.fallback)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | PathLike[str]) -> Path:
        """Write config, catalogs, retrievers, text encoders, templates and adapters (atomically)."""
        return save_recommender(path, list(self.scenarios.values()), self.config)

    @classmethod
    def from_pretrained(
        cls, path: str | PathLike[str], *, loaded: LoadedModel | None = None, embedder=None, **overrides: Any
    ) -> Recommender:
        """Load a saved recommender. ``overrides`` change config fields (e.g. ``quantization="4bit"``);
        ``loaded`` supplies an already loaded model; ``embedder`` replaces the text model (tests)."""
        config, scenarios = load_parts(path, embedder=embedder, **overrides)
        if loaded is None:
            loaded = load_model(config.model, quantization=config.quantization, dtype=config.dtype,
                                device=config.device, trust_remote_code=config.trust_remote_code)  # fmt: skip
        return cls(loaded, scenarios, config)
