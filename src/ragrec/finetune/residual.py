"""The residual, retriever-anchored LLM ranker: the LLM learns only what the first stage misses.

A candidate's served score is ``s_i = f_i + scale * logp_i``: ``f`` is a fixed fusion of the
first-stage score and item priors fitted on validation without the LLM
(:class:`~ragrec.inference.fusion.FusionModel`), ``logp_i`` the LLM's log-probability of candidate
``i``'s letter, and ``scale`` a number learned with the LoRA adapter. Training minimises the
cross-entropy of the target over each list's ``s``. The adapter's LoRA B matrices start at zero and
``scale`` at ``scale_init`` (0 by default; then the LoRA weights get no gradient until the scale
has moved, since it multiplies their effect), and step 0 is the fusion without the LLM; early stopping on validation
NDCG@10 (step 0 included) keeps the best, so the worst outcome is that fusion, reported as such
and then served alone (the LLM is not run for ranking; it stays for explain and chat).
What is served is the same sum: a ``FusionModel`` whose weights are ``f``'s plus ``llm_logp:
scale``, one code path (``Recommender.recommend``) for validation, evaluation and serving.

How the training lists are made honest and cheap:

* **Out-of-fold candidate lists** (:func:`out_of_fold_lists`): users are split into ``folds``
  folds; for each fold a recency EASE with the scenario's settings is fitted on the other folds'
  training sequences, and every position ``t`` of a held-out user's training sequence gets that
  model's top ``candidates`` for the history before ``t``. The retriever never saw the position it
  is asked about, as at serving time. Positions whose target is not in the list make no example:
  the LLM only ever ranks retrieved lists.
* **Position neutrality**: every list is shown in a fixed shuffle (``shown_order``), in training
  and at serving, so a letter carries no retriever rank.
* **Cached lower layers**: LoRA sits on the top ``top_layers`` layers only; the frozen layers below
  run once per example (no gradient) and their output, the hidden states entering the first adapted
  layer, is kept in a memory-mapped fp16 file. Every step then runs only the top layers, at the
  answer position only, over the candidate letters' output rows only.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.finetune.config import ResidualConfig
from ragrec.inference.fusion import FusionModel, ItemPriors
from ragrec.inference.rank import LetterRanker
from ragrec.inference.recommender import Recommender, shown_order
from ragrec.inference.scenario import Scenario
from ragrec.ranking import metric_table

__all__ = [
    "ResidualConfig",
    "CandidateList",
    "ResidualExample",
    "ResidualResult",
    "out_of_fold_lists",
    "fold_histories",
    "serving_lists",
    "residual_examples",
    "RenderedList",
    "render_lists",
    "SplitModel",
    "train_residual",
    "finetune_residual",
    "ResidualRun",
]


@dataclass
class CandidateList:
    """One position's candidates in the first stage's order with its scores; ``target`` is the
    target's index among them (-1: not retrieved)."""

    user_id: str
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    retriever: np.ndarray
    target: int
    fold: int = -1  # the fold whose users the retriever did not see (-1: the served retriever)


def _top(scores: np.ndarray, banned: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    s = scores.astype(np.float64, copy=True)
    s[list(banned)] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    idx = np.argpartition(-s, k - 1)[:k] if k else np.zeros(0, dtype=int)
    idx = idx[np.argsort(-s[idx], kind="stable")]
    return idx, s[idx]


def _folds(sc: Scenario, config) -> tuple[dict, dict[str, int]]:
    """The training sequences of ``sc`` and each user's fold (``config.folds``, ``config.seed``)."""
    sequences = sc.data.histories(splits=(S.TRAIN,))
    users = sorted(sequences)
    rng = np.random.default_rng(config.seed)
    return sequences, dict(zip(users, rng.permutation(len(users)) % config.folds))


def fold_histories(sc: Scenario, config) -> dict[str, list[tuple[str, ...]]]:
    """Per fold (keyed ``str(fold)``), the training sequences its out-of-fold retriever was fitted
    on (every other fold's), as :func:`out_of_fold_lists` splits them."""
    sequences, fold_of = _folds(sc, config)
    return {str(f): [sequences[u].item_ids for u in sorted(sequences) if fold_of[u] != f] for f in range(config.folds)}


def out_of_fold_lists(
    sc: Scenario, config: ResidualConfig, *, progress: bool = True
) -> tuple[list[CandidateList], dict[str, ItemPriors], dict[str, Any]]:
    """Every training position's out-of-fold list (see module docstring), the item priors of each
    fold (popularity from the users its retriever was fitted on) and a report: positions, how many
    lists hold their target (the out-of-fold candidate recall), and the same recall of the served
    retriever on the same positions (in-sample, for comparison)."""
    from ragrec.retrieval import EASEConfig, EASEEncoder

    enc = sc.retriever.encoder
    if not isinstance(enc, EASEEncoder):
        raise RagrecError(
            f"out-of-fold lists need the scenario's first stage to be EASE (closed form), not {enc.kind!r}"
        )
    sequences, fold_of = _folds(sc, config)
    users = sorted(sequences)
    item_ids = list(enc.item_ids)
    index = {i: j for j, i in enumerate(item_ids)}
    lists: list[CandidateList] = []
    priors: dict[str, ItemPriors] = {}
    positions = in_sample_hits = 0
    for fold in tqdm(range(config.folds), desc="out-of-fold EASE", disable=not progress, leave=False):
        fit = [sequences[u].item_ids for u in users if fold_of[u] != fold]
        model = EASEEncoder.from_sequences(item_ids, fit, EASEConfig(**enc.config.model_dump()))
        priors[str(fold)] = ItemPriors.from_histories(sc.catalog, fit)
        for u in (u for u in users if fold_of[u] == fold):
            seq = sequences[u].item_ids
            if len(seq) < 2:
                continue
            hists = [seq[:t] for t in range(1, len(seq))]
            oof, full = model.scores(hists), enc.scores(hists)
            everything = {index[i] for i in seq}
            for t, h in enumerate(hists, start=1):
                banned = sorted(everything - {index[seq[t]]})  # the user's other items: no false negatives
                idx, s = _top(oof[t - 1], banned, config.candidates)
                cands = tuple(item_ids[j] for j in idx)
                positions += 1
                in_sample_hits += int(index[seq[t]] in _top(full[t - 1], banned, config.candidates)[0])
                target = cands.index(seq[t]) if seq[t] in cands else -1
                if target >= 0:
                    lists.append(CandidateList(u, tuple(h), cands, s.astype(np.float32), target, fold))
    report = {
        "positions": positions,
        "lists_with_target": len(lists),
        f"oof_recall@{config.candidates}": round(len(lists) / max(positions, 1), 4),
        f"in_sample_recall@{config.candidates}": round(in_sample_hits / max(positions, 1), 4),
        "folds": config.folds,
    }
    return lists, priors, report


def serving_lists(sc: Scenario, split: str, users: Sequence[str] | None, k: int) -> list[CandidateList]:
    """The served retriever's lists for ``split``'s users (docs/evaluation.md histories)."""
    from ragrec.eval.protocol import eval_users

    all_users, histories, targets = eval_users(sc.data, split)
    wanted = set(users) if users is not None else None
    rows = [j for j, u in enumerate(all_users) if wanted is None or u in wanted]
    k = min(k, len(sc.retriever.index))  # as the Recommender retrieves
    results = sc.retriever.retrieve(histories=[list(histories[j]) for j in rows], k=k)
    out = []
    for j, res in zip(rows, results):
        cands = tuple(res.item_ids)
        out.append(CandidateList(all_users[j], tuple(histories[j]), cands,
                                 np.array([c.score for c in res.candidates], dtype=np.float32),
                                 cands.index(targets[j]) if targets[j] in cands else -1))  # fmt: skip
    return out


@dataclass
class ResidualExample:
    """A list as the LLM sees it: prompt token ids, the shown candidates' letter token ids, the
    fixed fusion's score of each shown candidate, and the target's shown index (-1: a miss)."""

    user_id: str
    input_ids: list[int]
    letter_ids: list[int]
    base: np.ndarray  # (C,) f, in shown order
    target: int
    shown: tuple[str, ...]


class RenderedList(NamedTuple):
    """A candidate list as the LLM sees it: the shown order (:func:`shown_order`), the prompt's token
    ids, the shown candidates' letter token ids and the target's shown index (-1: a miss)."""

    order: np.ndarray
    input_ids: list[int]
    letter_ids: list[int]
    target: int


def render_lists(rec: Recommender, sc: Scenario, lists: Sequence[CandidateList]) -> list[RenderedList]:
    """``lists`` in their shown order, rendered with the recommender's rank template and budget."""
    ranker = LetterRanker(rec.loaded, rec.template(sc, "rank"), budget=rec.budget)
    tok = rec.loaded.tokenizer
    out = []
    for cl in lists:
        order = shown_order(cl.candidates)
        texts, labels = ranker.prompts([rec.history_items(sc, cl.history)],
                                       [[sc.catalog[cl.candidates[j]] for j in order]], sc.config.item_noun)  # fmt: skip
        target = int(np.flatnonzero(order == cl.target)[0]) if cl.target >= 0 else -1
        out.append(RenderedList(order, tok(texts[0], add_special_tokens=False)["input_ids"],
                                ranker.label_ids(labels[0]), target))  # fmt: skip
    return out


def residual_examples(
    rec: Recommender, sc: Scenario, lists: Sequence[CandidateList], fusion: FusionModel, priors: ItemPriors | dict
) -> list[ResidualExample]:
    """Render ``lists`` in their shown order with the recommender's rank template and budget
    (:func:`render_lists`); ``priors`` is one :class:`ItemPriors` or one per fold (keyed by ``str(fold)``)."""
    if fusion.uses_llm:
        raise RagrecError("the residual ranker's fixed fusion must not use the LLM's score")
    out = []
    for cl, r in zip(lists, render_lists(rec, sc, lists)):
        shown = [cl.candidates[j] for j in r.order]
        p = priors[str(cl.fold)] if isinstance(priors, dict) else priors
        base = fusion.score(
            p.features(cl.history, shown, cl.retriever[r.order], None, fusion.names, fusion.max_history)
        )
        out.append(ResidualExample(cl.user_id, r.input_ids, r.letter_ids, base.astype(np.float32), r.target,
                                   tuple(shown)))  # fmt: skip
    return out


class SplitModel:
    """A causal LM cut before layer ``cut``: :meth:`lower` gives the hidden states entering it,
    :meth:`upper` runs the layers from ``cut`` up and returns the logits of the given tokens at the
    last position. ``upper(lower(x))`` equals the whole model's logits (the tests check it)."""

    def __init__(self, model, cut: int) -> None:
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder = causal.get_decoder()
        self.head = causal.get_output_embeddings()
        self.softcap = getattr(causal.config, "final_logit_softcapping", None)
        n = self.decoder.config.num_hidden_layers
        if not 0 < cut < n:
            raise RagrecError(f"cut at layer {cut} of a {n}-layer model: need 0 < cut < {n}")
        self.cut = cut

    @contextmanager
    def _layers(self, part: slice, norm: bool):
        dec, cfg = self.decoder, self.decoder.config
        saved = (dec.layers, cfg.num_hidden_layers, getattr(cfg, "layer_types", None), dec.norm)
        layers = list(dec.layers)[part]
        dec.layers = torch.nn.ModuleList(layers)
        cfg.num_hidden_layers = len(layers)
        if saved[2] is not None:
            cfg.layer_types = list(saved[2])[part]
        if not norm:
            dec.norm = torch.nn.Identity()
        try:
            yield
        finally:
            dec.layers, cfg.num_hidden_layers, dec.norm = saved[0], saved[1], saved[3]
            if saved[2] is not None:
                cfg.layer_types = saved[2]

    @torch.no_grad()
    def lower(self, input_ids: Sequence[int]) -> torch.Tensor:
        """(T, H) hidden states entering layer ``cut`` (no gradient)."""
        device = self.head.weight.device
        with self._layers(slice(0, self.cut), norm=False):
            out = self.decoder(input_ids=torch.tensor([list(input_ids)], device=device), use_cache=False)
        return out.last_hidden_state[0]

    def upper(self, hidden: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
        """(C,) logits of ``token_ids`` at the last position, from (T, H) ``hidden``."""
        with self._layers(slice(self.cut, None), norm=True):
            h = self.decoder(inputs_embeds=hidden[None].to(self.head.weight.dtype), use_cache=False).last_hidden_state
        ids = torch.tensor(list(token_ids), device=h.device)
        logits = h[0, -1] @ self.head.weight[ids].T
        if getattr(self.head, "bias", None) is not None:
            logits = logits + self.head.bias[ids]
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float()


class HiddenCache:
    """The lower layers' output of each example, fp16 in one memory-mapped file under ``folder``."""

    def __init__(self, split: SplitModel, examples: Sequence[ResidualExample], folder: Path, name: str,
                 progress: bool = True) -> None:  # fmt: skip
        hidden = split.head.weight.shape[1]
        lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.f16"
        self.data = np.memmap(self.path, dtype=np.float16, mode="w+", shape=(max(int(self.offsets[-1]), 1), hidden))
        start = time.perf_counter()
        for j, ex in enumerate(tqdm(examples, desc=f"cache lower layers ({name})", disable=not progress, leave=False)):
            self.data[self.offsets[j] : self.offsets[j + 1]] = split.lower(ex.input_ids).float().cpu().numpy()
        self.data.flush()
        self.seconds = time.perf_counter() - start

    def __getitem__(self, j: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.data[self.offsets[j] : self.offsets[j + 1]], dtype=np.float32))


@dataclass
class ResidualResult:
    """The trained ranker: adapter folder, the served fusion (``f`` + ``llm_logp: scale``), and how
    training went (validation curve, throughput, stop reason)."""

    adapter: Path
    fusion: FusionModel
    scale: float
    best_step: int
    stop_reason: str
    curve: list[tuple[int, float]]
    timing: dict[str, float]
    examples: int
    model: Any = None


def _ndcg(scored: Sequence[np.ndarray], examples: Sequence[ResidualExample], users: int) -> float:
    """NDCG@10 over ``users`` users of which ``examples`` are those whose target was retrieved."""
    ranks = np.full(users, np.inf)
    for j, (s, ex) in enumerate(zip(scored, examples)):
        ranks[j] = int((s >= s[ex.target]).sum())  # pessimistic on ties
    return float(metric_table(ranks, (10,))["ndcg@10"])


def train_residual(
    rec: Recommender,
    scenario: str | None,
    train: Sequence[ResidualExample],
    valid: Sequence[ResidualExample],
    valid_users: int,
    fusion: FusionModel,
    config: ResidualConfig,
    out: str | PathLike[str],
    *,
    progress: bool = True,
) -> ResidualResult:
    """Train the residual ranker on ``train`` and keep the state with the best validation NDCG@10
    over ``valid_users`` users (``valid``: those whose target was retrieved; step 0 = the fusion
    alone). Saves the adapter to ``out`` (atomically) with the served fusion in its metadata."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from ragrec.inference.adapters import AdapterInfo, model_fingerprint, save_adapter

    sc = rec.scenario(scenario)
    loaded = rec.loaded
    if loaded.quantization != "none":
        raise RagrecError("the residual ranker trains on an unquantised base (its lower layers are cached)")
    if not train or not valid:
        raise RagrecError(f"{len(train)} training and {len(valid)} validation lists: need both")
    out = Path(out)
    fingerprint = model_fingerprint(loaded.model)
    total = loaded.model.config.num_hidden_layers
    cut = max(1, total - config.top_layers)
    set_seed(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=config.target_modules,
                      layers_to_transform=list(range(cut, total)), task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(loaded.model, lora)
    loaded.model = model
    split = SplitModel(model, cut)
    work = out.with_name(out.name + ".work")
    timing: dict[str, float] = {}
    model.eval()
    train_cache = HiddenCache(split, train, work, "train", progress)
    valid_cache = HiddenCache(split, valid, work, "valid", progress)
    timing["cache_seconds_per_example"] = (train_cache.seconds + valid_cache.seconds) / (len(train) + len(valid))
    scale = torch.nn.Parameter(torch.tensor(float(config.scale_init)))
    lora_params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora_params, "lr": config.learning_rate},
                             {"params": [scale], "lr": config.scale_learning_rate}], weight_decay=0.0)  # fmt: skip
    steps = max(1, math.ceil(len(train) * config.epochs / config.grad_accum))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    base_valid = [torch.from_numpy(e.base) for e in valid]

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            scored = [(b + scale * torch.log_softmax(split.upper(valid_cache[j], e.letter_ids), 0)).numpy()
                      for j, (e, b) in enumerate(zip(valid, base_valid))]  # fmt: skip
        model.train()
        return _ndcg(scored, valid, valid_users)

    def snapshot() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                "scale": float(scale.detach())}  # fmt: skip

    # step 0 is the fusion alone (scale 0, LoRA B = 0), whatever scale training starts from
    curve = [(0, _ndcg([e.base for e in valid], valid, valid_users))]
    best, best_step, best_value, bad = {**snapshot(), "scale": 0.0}, 0, curve[0][1], 0
    rng = np.random.default_rng(config.seed)
    order = np.concatenate([rng.permutation(len(train)) for _ in range(math.ceil(config.epochs))])
    order = order[: steps * config.grad_accum]
    start, stop = time.perf_counter(), "completed"
    bar = tqdm(total=steps, desc="residual ranker", disable=not progress)
    model.train()
    for step in range(1, steps + 1):
        for j in order[(step - 1) * config.grad_accum : step * config.grad_accum]:
            ex = train[j]
            s = torch.from_numpy(ex.base) + scale * torch.log_softmax(split.upper(train_cache[j], ex.letter_ids), 0)
            loss = torch.nn.functional.cross_entropy(s[None], torch.tensor([ex.target])) / config.grad_accum
            loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        bar.update(1)
        if step % config.eval_every == 0 or step == steps:
            value = validate()
            curve.append((step, value))
            bar.set_postfix(ndcg10=f"{value:.4f}", scale=f"{float(scale.detach()):.3f}")
            if value > best_value:
                best, best_step, best_value, bad = snapshot(), step, value, 0
            else:
                bad += 1
            if bad >= config.patience:
                stop = f"early stopping (no validation NDCG@10 gain in {config.patience} validations)"
                break
        if config.max_minutes is not None and time.perf_counter() - start > config.max_minutes * 60:
            stop = f"time limit of {config.max_minutes:g} min"
            break
    bar.close()
    seconds = time.perf_counter() - start
    timing["train_seconds"] = seconds
    timing["train_seconds_per_example"] = seconds / max(1, step * config.grad_accum)
    timing["examples_seen"] = float(step * config.grad_accum)
    with torch.no_grad():  # the best state back
        for n, p in model.named_parameters():
            if n in best["lora"]:
                p.copy_(best["lora"][n])
    model.eval()
    if best_step == 0:  # the LLM did not help on validation: serve the fusion alone (the LLM is not run)
        served = fusion
    else:
        served = FusionModel(weights={**fusion.weights, "llm_logp": round(best["scale"], 6)},
                             max_history=fusion.max_history,
                             fitted_on={**fusion.fitted_on, "llm_logp": "scale learned with the adapter"})  # fmt: skip
    stop += f"; best validation at step {best_step}" + (" (the fusion without the LLM)" if best_step == 0 else "")
    info = AdapterInfo(
        base_model=loaded.source, base_fingerprint=fingerprint, scenario=sc.name, tasks={"rank": len(train)},
        templates={"rank": f"{rec.template(sc, 'rank').scenario}/rank v{rec.template(sc, 'rank').version}"},
        split="train (out-of-fold lists); valid (fusion, early stopping)",
        metrics={"valid_ndcg@10_best": best_value, "valid_users": valid_users,
                 "valid_curve": curve, "best_step": best_step, "served_fusion": served.model_dump()},
        train={"config": config.model_dump(), "recipe": "residual", "seconds": round(seconds, 1), "steps": step,
               "stop_reason": stop, "device": loaded.device, "examples": len(train), "timing": timing},
    )  # fmt: skip
    save_adapter(model, "default", out, info)
    shutil.rmtree(work, ignore_errors=True)
    return ResidualResult(out, served, best["scale"], best_step, stop, curve, timing, len(train), model)


def _fit_anchor(lists: Sequence[CandidateList], priors: ItemPriors, names: Sequence[str]) -> FusionModel:
    """A fusion over ``names`` (no LLM) fitted on ``lists`` (the priors read the last 20 history items)."""
    from ragrec.inference.fusion import fit_fusion

    rows = [priors.features(cl.history, cl.candidates, cl.retriever, None, names) for cl in lists]
    return fit_fusion(rows, [cl.target for cl in lists], names)


@dataclass
class ResidualRun:
    """Everything :func:`finetune_residual` did: the trained ranker, the anchor fusion (and the
    priors-only fusion, for reports), the out-of-fold report and the example counts."""

    result: ResidualResult
    anchor: FusionModel
    priors_only: FusionModel
    out_of_fold: dict[str, Any]
    train_lists: list[CandidateList]
    train_examples: list[ResidualExample]
    valid_users: int
    valid_examples: int
    render_seconds_per_example: float


def finetune_residual(
    rec: Recommender, scenario: str | None, config: ResidualConfig, out: str | PathLike[str], *, progress: bool = True
) -> ResidualRun:
    """The whole recipe on one scenario of ``rec`` (see module docstring): the anchor fusion of
    the first stage and item priors fitted on every validation user's served list, out-of-fold
    training lists (``config.examples`` of them sampled), validation on ``config.valid_users``
    users, training, and the adapter saved to ``out`` with the fusion to serve."""
    from ragrec.eval.llm import sample_users, split_priors
    from ragrec.inference.fusion import FEATURES, LLM_FEATURES

    sc = rec.scenario(scenario)
    if config.candidates != rec.config.candidates:
        raise RagrecError(f"the residual ranker trains on lists of {config.candidates} but the recommender serves "
                          f"{rec.config.candidates} candidates: make them equal")  # fmt: skip
    priors_v = split_priors(sc, S.VALID)
    vlists = serving_lists(sc, S.VALID, None, config.candidates)
    names = [n for n in FEATURES if n not in LLM_FEATURES]
    anchor = _fit_anchor(vlists, priors_v, names)
    priors_only = _fit_anchor(vlists, priors_v, [n for n in names if n != "retriever"])
    lists, fold_priors, oof = out_of_fold_lists(sc, config, progress=progress)
    if not lists:
        raise RagrecError(f"no training position of scenario {sc.name!r} has its target among {config.candidates} "
                          "out-of-fold candidates")  # fmt: skip
    rng = np.random.default_rng(config.seed)
    picked = sorted(rng.choice(len(lists), size=min(config.examples or len(lists), len(lists)), replace=False))
    wanted = set(sample_users(sorted(cl.user_id for cl in vlists), config.valid_users, seed=config.seed))
    valid_lists = [cl for cl in vlists if cl.user_id in wanted]
    start = time.perf_counter()
    train_lists = [lists[j] for j in picked]
    train = residual_examples(rec, sc, train_lists, anchor, fold_priors)
    valid = residual_examples(rec, sc, [cl for cl in valid_lists if cl.target >= 0], anchor, priors_v)
    render = (time.perf_counter() - start) / max(1, len(train) + len(valid))
    result = train_residual(rec, sc.name, train, valid, len(valid_lists), anchor, config, out, progress=progress)
    return ResidualRun(result, anchor, priors_only, oof, train_lists, train, len(valid_lists), len(valid), render)
