"""Instruction examples from a scenario's training interactions, rendered by the inference code.

Every prompt comes from the same renderer the :class:`~ragrec.inference.Recommender` uses at
serving time (``LetterRanker.prompts``, ``RatingPredictor.prompts``, ``Explainer.messages``)
with the same templates and budget, so training and serving cannot drift apart.

Only interactions of the ``train`` split are read: a target is an item of a user's training
sequence and its history is what came before it. Validation and test items never appear in a
training example (they are not even loaded).

* **rank**: the target among ``candidates - 1`` negatives, a share of them drawn from the
  retriever's top ``candidates`` for that history (hard negatives, the kind seen at serving time)
  and the rest random catalog items; items the user ever trained on are never negatives. With
  ``target_retrieved`` (default) only positions whose target the retriever itself ranks in its top
  ``candidates`` make rank examples, and hard negatives are drawn uniformly from that same top
  list: target and negatives are then alike in how the retriever sees them, as at serving time,
  where the LLM only ever ranks retrieved items. (Inserting a target the retriever does not rank
  among its top results teaches "the least retriever-like candidate is the answer", which is
  false at serving time and made a fine-tuned model rank worse than chance.) The list is
  shuffled, so the letter's position carries no signal; the answer is the target's letter and
  ``choices`` lists every candidate's letter (for the loss over candidates).
* **rate**: the answer is the rounded rating (when the data has ratings).
* **explain**: the prompt carries the target's evidence (the history items that drove it, as
  serving computes it); the answer names them: where the catalog has titles, a sentence built from
  the evidence and the categories the target shares with it (``attribute_explanation``, what a
  person can check), followed by the user's own review of the target where one exists (cut at a
  sentence end). ``explain_targets`` picks ``reviews`` or ``evidence`` alone.
* **chat**: short conversations (one to three turns) over the history before the position, with
  questions drawn from a training question bank (:data:`CHAT_QUESTIONS`: requests, filters by
  category and decade, "like X", "why the first one"), each prompt rendered by
  :meth:`ChatSession.prepare` as at serving time; the answer is the data-built answer
  (:meth:`ChatSession.data_answer`: the items offered and the history items behind them), kept
  only when it passes the same grounding check as a model's answer.

No target names an item, a category or a year the data does not support.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ragrec import schema as S
from ragrec.data.text import clean_review, clean_text
from ragrec.errors import RagrecError
from ragrec.finetune.config import FinetuneConfig
from ragrec.inference.chat import ChatSession
from ragrec.inference.evidence import evidence_for
from ragrec.inference.explain import Explainer
from ragrec.inference.grounding import attribute_explanation
from ragrec.inference.rank import LetterRanker
from ragrec.inference.rate import RatingPredictor
from ragrec.inference.recommender import Recommender
from ragrec.inference.scenario import Scenario
from ragrec.prompts import chat_text
from ragrec.registry import Registry
from ragrec.tasks import TASKS
from ragrec.types import UserHistory

__all__ = ["Example", "ExampleSet", "ExampleBuilder", "BUILDERS", "CHAT_QUESTIONS", "build_examples", "to_dataset"]


@dataclass(frozen=True)
class Example:
    """One supervised example: a chat-formatted ``prompt`` (ending where the answer starts) and
    the ``completion`` the model should write; ``item_id`` is the target item."""

    task: str
    user_id: str
    item_id: str
    prompt: str
    completion: str
    choices: tuple[str, ...] = ()  # rank: the letters of all candidates (the answer is one of them)


@dataclass
class ExampleSet:
    """The examples, how many per task, and why any task got fewer than asked (or none)."""

    examples: list[Example]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Position:
    user_id: str
    t: int  # index of the target in the user's training sequence


def _train_frame(sc: Scenario):
    frame = sc.data.interactions_frame()
    if sc.data.has_split:
        frame = frame[frame[S.SPLIT] == S.TRAIN]
    return frame


@dataclass
class _Sources:
    """What the example builders read, computed on first use: the training sequences, the candidate
    positions, reviews by position and the retrieved lists of rank positions."""

    sc: Scenario
    config: FinetuneConfig
    rng: np.random.Generator
    frame: Any
    sequences: dict[str, UserHistory]
    positions: list[_Position]

    def want(self, task: str) -> int:
        """Examples of ``task`` the mixture asks for."""
        mix = self.config.mixture
        return max(1, round(self.config.examples * mix[task] / sum(mix.values())))

    @cached_property
    def reviews(self) -> dict[tuple[str, int], str]:
        out: dict[tuple[str, int], str] = {}
        if S.REVIEW not in self.frame:
            return out
        cfg = self.config
        for user, group in self.frame.groupby(S.USER_ID, sort=False):  # rows in each user's chronological order
            for t, text in enumerate(group[S.REVIEW].tolist()):
                cleaned = clean_review(text if isinstance(text, str) else None, cfg.max_review_chars)
                if len(cleaned) >= cfg.min_review_chars:
                    out[(str(user), t)] = cleaned
        return out

    @cached_property
    def retrieved(self) -> dict[tuple[str, int], list[str]]:
        return _retrieved(self.sc, self.sequences, self.positions, self.config, self.want("rank"), self.rng)


@dataclass(frozen=True)
class ExampleBuilder:
    """How a trainable task's examples are made (one registration in :data:`BUILDERS` per task of
    :mod:`ragrec.tasks` with ``trainable=True``): ``pool`` keeps the training positions that can
    make an example, ``build`` makes examples from the picked ones; ``needs`` (optional) says what
    was missing when the pool is empty (default: the task's ``needs``)."""

    pool: Callable[[_Sources], list[_Position]]
    build: Callable[[Recommender, Scenario, _Sources, list[_Position]], list[Example]]
    needs: Callable[[FinetuneConfig], str] | None = None


BUILDERS: Registry[ExampleBuilder] = Registry("example builder")


def build_examples(rec: Recommender, scenario: str | None, config: FinetuneConfig) -> ExampleSet:
    """Examples for ``scenario`` of ``rec`` (its templates and prompt budget), mixed by ``config``."""
    sc = rec.scenario(scenario)
    if not sc.data.has_split:
        raise RagrecError(f"dataset {sc.data.name!r} has no split: fine-tuning needs train/valid/test")
    rng = np.random.default_rng(config.seed)
    sequences = sc.data.histories(splits=(S.TRAIN,))
    positions = [
        _Position(u, t)
        for u, h in sequences.items()
        for t in range(len(h) - 1, max(0, len(h) - 1 - config.positions), -1)
        if t >= 1
    ]
    src = _Sources(sc, config, rng, _train_frame(sc), sequences, positions)
    pools = {task: BUILDERS.get(task).pool(src) for task in config.mixture}
    out = ExampleSet([])
    weights = {task: w for task, w in config.mixture.items() if pools[task]}
    for task in config.mixture:
        if task not in weights:
            builder = BUILDERS.get(task)
            what = builder.needs(config) if builder.needs is not None else TASKS.get(task).needs
            out.notes.append(f"task {task!r} dropped: the training split has no {what}")
    total = sum(weights.values())
    for task, w in weights.items():
        want = max(1, round(config.examples * w / total))
        pool = pools[task]
        picked = [pool[j] for j in sorted(rng.choice(len(pool), size=min(want, len(pool)), replace=False))]
        if len(picked) < want:
            out.notes.append(f"task {task!r}: {len(picked)} examples (all there are) of {want} asked")
        made = BUILDERS.get(task).build(rec, sc, src, picked)
        out.examples.extend(made)
        out.counts[task] = len(made)
    order = rng.permutation(len(out.examples))  # tasks interleaved
    out.examples = [out.examples[j] for j in order]
    return out


_CHUNK = 512  # positions retrieved per batch


def _retrieved(sc, sequences, positions, config, want: int, rng) -> dict[tuple[str, int], list[str]]:
    """For positions in random order, the retriever's top ``candidates`` for the history before it
    (items of the user's training sequence left out, except the target); with ``target_retrieved``
    only the positions whose target is among them. Stops once ``want`` positions are found: a
    prefix of a random order is a uniform sample, and a 50k-user catalog is not searched whole
    for a few hundred examples."""
    k = min(len(sc.retriever.index), config.candidates + 50)
    out: dict[tuple[str, int], list[str]] = {}
    order = [positions[j] for j in rng.permutation(len(positions))]
    for start in range(0, len(order), _CHUNK):
        if len(out) >= want:
            break
        chunk = order[start : start + _CHUNK]
        histories = [list(sequences[p.user_id].item_ids[: p.t]) for p in chunk]
        for p, res in zip(chunk, sc.retriever.retrieve(histories=histories, k=k)):
            seq = sequences[p.user_id].item_ids
            banned = set(seq) - {seq[p.t]}
            top = [i for i in res.item_ids if i not in banned][: config.candidates]
            if seq[p.t] in top or not config.target_retrieved:
                out[(p.user_id, p.t)] = top
    return out


def _rank(rec, sc, src: _Sources, picked) -> list[Example]:
    sequences, config, rng, retrieved = src.sequences, src.config, src.rng, src.retrieved
    ranker = LetterRanker(rec.loaded, rec.template(sc, "rank"), budget=rec.budget)
    n_neg = config.candidates - 1
    n_hard = round(n_neg * config.hard_negatives)
    # Negatives come from items with training interactions: an item seen only in valid/test never
    # enters a training example, not even as a negative.
    catalog = np.array(sorted({i for h in sequences.values() for i in h.item_ids}))
    known = set(catalog.tolist())
    hist_items, cand_items, meta = [], [], []
    for p in picked:
        seq = sequences[p.user_id].item_ids
        target = seq[p.t]
        banned = set(seq)  # every item of the user's training sequence: not a negative
        pool = [i for i in retrieved[(p.user_id, p.t)] if i != target and i in known]
        hard = [pool[j] for j in sorted(rng.choice(len(pool), size=min(n_hard, len(pool)), replace=False))]
        taken = banned | set(hard)
        random: list[str] = []
        while len(hard) + len(random) < n_neg and len(taken) < len(catalog):
            for i in rng.choice(catalog, size=min(len(catalog), 2 * n_neg), replace=False):
                if i not in taken and len(hard) + len(random) < n_neg:
                    random.append(str(i))
                    taken.add(str(i))
        cands = [target, *hard, *random]
        cands = [cands[j] for j in rng.permutation(len(cands))]  # letter position carries no signal
        hist_items.append(rec.history_items(sc, seq[: p.t]))
        cand_items.append([sc.catalog[i] for i in cands])
        meta.append((p.user_id, target, cands.index(target)))
    texts, labels = ranker.prompts(hist_items, cand_items, sc.config.item_noun)
    return [
        Example("rank", u, target, text, labs[pos], tuple(labs))
        for (u, target, pos), text, labs in zip(meta, texts, labels)
    ]


def _rate(rec, sc, src: _Sources, picked) -> list[Example]:
    sequences = src.sequences
    predictor = RatingPredictor(rec.loaded, rec.template(sc, "rate"), budget=rec.budget)
    values = [float(v) for v in predictor.values]
    out = []
    for p in picked:
        h = sequences[p.user_id]
        rating = h.ratings[p.t]
        answer = predictor.values[int(np.argmin([abs(v - rating) for v in values]))]  # nearest allowed value
        text = predictor.prompts(rec.history_items(sc, h.item_ids[: p.t]), list(h.ratings[: p.t]),
                                 [sc.catalog[h.item_ids[p.t]]], item_noun=sc.config.item_noun)[0]  # fmt: skip
        out.append(Example("rate", p.user_id, h.item_ids[p.t], text, answer))
    return out


def _titled(sc: Scenario) -> bool:
    """Whether the catalog has titles (an evidence-built sentence can name items a person knows)."""
    return any(item.title for item in sc.catalog.values())


def _explain_pool(src: _Sources) -> list[_Position]:
    mode = src.config.explain_targets
    if mode != "reviews" and _titled(src.sc):
        return [p for p in src.positions if src.sequences[p.user_id].item_ids[: p.t]]
    return [p for p in src.positions if (p.user_id, p.t) in src.reviews] if mode != "evidence" else []


def _explain(rec, sc, src: _Sources, picked) -> list[Example]:
    sequences, reviews, mode = src.sequences, src.reviews, src.config.explain_targets
    explainer = Explainer(rec.loaded, rec.template(sc, "explain"), sc.matcher, budget=rec.budget)
    titled = mode != "reviews" and _titled(sc)
    out = []
    for p in picked:
        h = sequences[p.user_id]
        item = sc.catalog[h.item_ids[p.t]]
        past = h.item_ids[: p.t]  # the evidence as serving computes it, from the history at that point
        evidence = evidence_for(sc.retriever.encoder, sc.catalog, past, [item.item_id], rec.config.evidence)[0]
        hist = rec.history_items(sc, past)
        parts = []
        if titled:
            support = [sc.catalog[e.item_id] for e in evidence if e.item_id in sc.catalog]
            parts.append(attribute_explanation(item, hist, sc.config.item_noun, support))
        if mode != "evidence" and (p.user_id, p.t) in reviews:
            parts.append(reviews[(p.user_id, p.t)])
        messages = explainer.messages(hist, item, sc.config.item_noun, evidence)
        out.append(Example("explain", p.user_id, item.item_id, chat_text(rec.loaded.tokenizer, messages),
                           " ".join(parts)))  # fmt: skip
    return out


# Training questions for chat examples, worded differently from benchmarks/data/chat_script.yaml
# (the benchmark's script is never trained on). {noun}: the scenario's item noun; {cat}: a catalog
# category; {decade}: a decade of the catalog's years; {title}: a history item; {ord}: an ordinal
# of the list shown last; {k}: its number.
CHAT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "recommend": ("what would you suggest for me?", "what else might I enjoy?", "pick a few {noun}s for me",
                  "I'd like a new {noun} for the weekend", "anything else worth my time?"),
    "category": ("give me some {cat} picks", "I'm in the mood for {cat}", "got any good {cat} titles?"),
    "decade": ("anything from the {decade}?", "a {noun} from the {decade}, please", "{cat} from the {decade}?"),
    "like": ("more {noun}s like {title}", "anything along the lines of {title}?", "similar to {title}, please"),
    "about": ("what makes the {ord} one a good fit?", "explain pick number {k}", "why did you suggest {title}?",
              "how does the {ord} one match my taste?", "what about the {ord}?"),
}  # fmt: skip
_ORD = ("first", "second", "third", "fourth", "fifth")


def _chat_question(kind: str, sc: Scenario, session: ChatSession, past: Sequence[str], rng) -> str | None:
    """One training question of ``kind`` with its slots filled from the catalog and the session."""
    noun = sc.config.item_noun
    forms = list(CHAT_QUESTIONS[kind])
    form = forms[int(rng.integers(len(forms)))]
    fill: dict[str, str] = {"noun": noun}
    if "{cat}" in form:
        if not sc.categories:
            return None
        fill["cat"] = sc.categories[int(rng.integers(len(sc.categories)))]
    if "{decade}" in form:
        years = sorted({i.year for i in sc.catalog.values() if i.year})
        if not years:
            return None
        fill["decade"] = f"{years[int(rng.integers(len(years)))] // 10 * 10}s"
    if "{title}" in form:
        pool = past if kind == "like" else session.shown
        titled = [i for i in pool if i in sc.catalog and sc.catalog[i].title]
        if not titled:
            return None
        fill["title"] = clean_text(sc.catalog[titled[int(rng.integers(min(len(titled), 5)))]].title) or ""
    if "{ord}" in form or "{k}" in form:
        n = min(len(session.shown), len(_ORD))
        if not n:
            return None
        k = int(rng.integers(n))
        fill |= {"ord": _ORD[k], "k": str(k + 1)}
    return form.format(**fill)


def _chat(rec, sc, src: _Sources, picked) -> list[Example]:
    sequences, rng = src.sequences, src.rng
    out: list[Example] = []
    tokenizer = rec.loaded.tokenizer
    for p in picked:
        past = list(sequences[p.user_id].item_ids[: p.t])
        session = ChatSession(rec, sc, UserHistory(p.user_id, tuple(past)), user_id=None)
        session.show_retrieved()
        turns = int(rng.integers(1, 4))
        for _ in range(turns):
            kinds = ["recommend", "category", "decade", "like", "about", "about"]
            question = _chat_question(kinds[int(rng.integers(len(kinds)))], sc, session, past, rng)
            if question is None:
                continue
            turn = session.prepare(question)
            if not turn.items:
                break
            answer, prompt = session.data_answer(turn.kind, turn.items), chat_text(tokenizer, turn.messages)
            if not set(sc.matcher.cited(answer)) <= set(sc.matcher.cited(prompt)):
                break  # it names a history item the prompt had no room for: not learnable from the prompt
            if session.commit(turn, answer).fallback is not None:
                break  # a target is only ever an answer that passes the check; the conversation ends here
            out.append(Example("chat", p.user_id, turn.items[0].item_id, prompt, answer))
    return out


BUILDERS.register("rank", ExampleBuilder(
    lambda src: [p for p in src.positions if (p.user_id, p.t) in src.retrieved],  # a uniform sample (_retrieved)
    _rank,
    lambda cfg: "training sequences of 2+ items" + (" whose target the retriever returns" if cfg.target_retrieved else ""),
))  # fmt: skip
BUILDERS.register("rate", ExampleBuilder(
    lambda src: [p for p in src.positions
                 if src.sequences[p.user_id].ratings and src.sequences[p.user_id].ratings[p.t] is not None],
    _rate,
))  # fmt: skip
BUILDERS.register("explain", ExampleBuilder(
    _explain_pool, _explain,
    lambda cfg: "review text" if cfg.explain_targets == "reviews" else "review text or item titles",
))  # fmt: skip
BUILDERS.register("chat", ExampleBuilder(lambda src: [p for p in src.positions if p.t >= 2], _chat))


def to_dataset(examples: Sequence[Example], tokenizer, *, max_tokens: int, choices: bool = True):
    """A Hugging Face ``datasets.Dataset`` of ``input_ids`` and ``labels`` (prompt tokens masked
    with -100; text answers end with the EOS token so the model learns to stop). With ``choices``,
    a rank example also carries the token ids of its candidates' letters (``choices``; empty for
    other tasks), for the loss over candidates. Examples longer than ``max_tokens`` are dropped;
    the second value says how many."""
    from datasets import Dataset, Features, List, Value

    rows: dict[str, list] = {"input_ids": [], "labels": [], "choices": [], "task": [], "user_id": [], "item_id": []}
    dropped = 0
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        if TASKS.get(ex.task).output == "text" and tokenizer.eos_token_id is not None:
            answer = answer + [tokenizer.eos_token_id]
        if len(prompt) + len(answer) > max_tokens or not answer:
            dropped += 1
            continue
        letters = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in ex.choices] if choices else []
        if any(len(t) != 1 for t in letters) or (letters and len(answer) != 1):
            raise RagrecError(f"rank labels must be single tokens for the loss over candidates: {ex.choices}")
        rows["input_ids"].append(prompt + answer)
        rows["labels"].append([-100] * len(prompt) + answer)
        rows["choices"].append([t[0] for t in letters])
        rows["task"].append(ex.task)
        rows["user_id"].append(ex.user_id)
        rows["item_id"].append(ex.item_id)
    ints = List(Value("int64"))
    features = Features({"input_ids": ints, "labels": ints, "choices": ints, "task": Value("string"),
                         "user_id": Value("string"), "item_id": Value("string")})  # fmt: skip
    return Dataset.from_dict(rows, features=features), dropped
