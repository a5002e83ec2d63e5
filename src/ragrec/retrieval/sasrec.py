"""SASRec: a causal transformer over a user's item sequence (Kang & McAuley, ICDM 2018).

Trained with cross-entropy over the whole catalog at every position (full softmax), or with
sampled softmax for large catalogs. Its item embedding table is the item side of the FAISS
index; the hidden state after the last history item is the user's query vector, so
``score(user, item) = query . item_embedding``.

Sequences are left-padded to ``max_len``: the most recent item always sits in the last slot.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.ranking import ndcg_at, target_ranks
from ragrec.retrieval.base import ENCODERS, Encoder

__all__ = ["SASRecConfig", "SASRec", "SASRecEncoder", "TrainReport", "pad_left", "training_windows", "resolve_device"]


class SASRecConfig(BaseModel):
    """Architecture and training settings of SASRec. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=8, description="Embedding and hidden size.")
    layers: int = Field(2, ge=1, description="Transformer blocks.")
    heads: int = Field(2, ge=1, description="Attention heads (must divide hidden).")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on embeddings, attention and FFN.")
    max_len: int = Field(200, ge=2, description="Longest history the model reads (most recent items).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(128, ge=1, description="Sequences per training step.")
    epochs: int = Field(200, ge=1, description="Most epochs to train.")
    patience: int = Field(20, ge=1, description="Stop after this many epochs without a better validation NDCG@10.")
    negatives: int | None = Field(
        None, ge=1, description="Sampled-softmax negatives per step; None = full softmax over the catalog."
    )
    seed: int = Field(0, description="Seed for initialisation, shuffling and dropout.")
    refit_with_valid: bool = Field(
        True,
        description="After early stopping, train again for the best number of epochs on train + valid "
        "items (the test-time history), as the model then sees the user's latest item.",
    )

    def model_post_init(self, __context: object) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")


class _Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward, as in SASRec."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # (B, H, L, d/H) each; mask (B, 1, L, L) True = may attend.
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    """The network. Item index 0 is padding; catalog items are 1..n_items."""

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.n_items = n_items
        d = config.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(d, config.heads, config.dropout) for _ in range(config.layers))
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(d))
        nn.init.normal_(self.pos_emb.weight, std=1.0 / math.sqrt(d))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: (B, L) item indices, left-padded with 0 -> (B, L, d) hidden states."""
        b, n = seq.shape
        pad = seq == 0  # (B, L)
        pos = torch.arange(self.config.max_len - n, self.config.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.config.hidden) + self.pos_emb(pos)[None]
        x = self.drop(x) * (~pad)[..., None]
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        # A position attends to earlier non-pad positions, and always to itself (no empty rows).
        mask = (causal[None] & ~pad[:, None, :]) | torch.eye(n, dtype=torch.bool, device=seq.device)[None]
        mask = mask[:, None]  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) output embeddings of the catalog (padding row excluded)."""
        return self.item_emb.weight[1:]

    def user_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, d) query vectors: the hidden state at the last (most recent) position."""
        return self.forward(seq)[:, -1]

    def loss(
        self, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean cross-entropy of the next item at every non-pad position.

        ``inputs``, ``targets``: (B, L), targets[:, t] = item after inputs[:, t] (0 where padded).
        """
        hidden = self.forward(inputs)  # (B, L, d)
        keep = targets > 0
        h, y = hidden[keep], targets[keep]  # (M, d), (M,)
        items = self.item_emb.weight  # (n_items + 1, d)
        if self.config.negatives is None:
            logits = h @ items[1:].T  # (M, n_items)
            return F.cross_entropy(logits, y - 1)
        # Sampled softmax: the positive plus shared uniform negatives (collisions masked out).
        neg = torch.randint(1, self.n_items + 1, (self.config.negatives,), device=h.device, generator=generator)
        pos_logit = (h * items[y]).sum(-1, keepdim=True)  # (M, 1)
        neg_logits = h @ items[neg].T  # (M, S)
        neg_logits = neg_logits.masked_fill(neg[None] == y[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device))


def pad_left(sequences: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """(B, length) long tensor: the last ``length`` items of each sequence, left-padded with 0."""
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tail = list(seq)[-length:]
        if tail:
            out[row, length - len(tail) :] = torch.tensor(tail, dtype=torch.long)
    return out


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each sequence into (input, target) windows so that every item after the first is a
    target exactly once; long histories yield several windows (most recent first).

    Returns ``inputs``, ``targets``: (W, max_len), left-padded.
    """
    inputs: list[list[int]] = []
    targets: list[list[int]] = []
    for seq in sequences:
        seq = list(seq)
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            window = seq[start:end]
            inputs.append(window[:-1])
            targets.append(window[1:])
            end = start + 1  # the next window's targets end where this one's inputs began
            if start == 0:
                break
    return pad_left(inputs, max_len), pad_left(targets, max_len)


# ---------------------------------------------------------------------------------- encoder


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class TrainReport:
    """What training did: epochs, the best validation NDCG@10 and when, wall time."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_valid_ndcg10: float = 0.0
    valid_ndcg10: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    refit_seconds: float = 0.0
    device: str = "cpu"


@ENCODERS.decorator("sasrec")
class SASRecEncoder(Encoder):
    """Sequential collaborative encoder: SASRec item embeddings + last hidden state as query."""

    kind = "sasrec"

    def __init__(self, item_ids: Sequence[str], config: SASRecConfig, model: SASRec | None = None) -> None:
        super().__init__(item_ids)
        self.config = config
        self.model = model if model is not None else SASRec(len(self.item_ids), config)
        self.model.eval()
        self.refit_seconds = 0.0

    # -- Encoder
    def item_embeddings(self) -> np.ndarray:
        return self.model.item_vectors().detach().float().cpu().numpy()

    @torch.no_grad()
    def encode_histories(self, histories: Sequence[Sequence[str]], batch_size: int = 512) -> np.ndarray:
        device = next(self.model.parameters()).device
        self.model.eval()
        out = []
        for start in range(0, len(histories), batch_size):
            seqs = [[i + 1 for i in self.indices(h)] for h in histories[start : start + batch_size]]
            out.append(self.model.user_vectors(pad_left(seqs, self.config.max_len).to(device)).float().cpu())
        if not out:
            return np.zeros((0, self.config.hidden), dtype=np.float32)
        return torch.cat(out).numpy()

    def _config(self) -> dict[str, Any]:
        return self.config.model_dump()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    @classmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SASRecEncoder:
        cfg = SASRecConfig(**config)
        model = SASRec(len(item_ids), cfg)
        model.load_state_dict(tensors)
        return cls(item_ids, cfg, model)

    # -- training
    @classmethod
    def fit(
        cls,
        data: InteractionData,
        config: SASRecConfig | None = None,
        *,
        device: str = "auto",
        progress: bool = True,
        refit: bool | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> tuple[SASRecEncoder, TrainReport]:
        """Train on the ``train`` split, early-stop on validation NDCG@10 (history masked).

        With ``refit`` (default: ``config.refit_with_valid``) the returned model is then retrained
        from scratch by :meth:`refit`. Tune anything else on validation with the model returned
        by ``refit=False``: the refit one has seen the validation items. With ``checkpoint_dir``
        the best model so far is saved there (atomically) whenever validation improves.
        """
        config = config or SASRecConfig()
        dev = resolve_device(device)
        enc = cls(data.item_ids(), config)
        train = data.histories(splits=(S.TRAIN,))
        valid = data.target_sets(S.VALID)  # every validation target (several under a ratio split)
        if not train:
            raise ValueError(f"dataset {data.name!r} has no training interactions")
        seqs = {u: [enc.item_index[i] + 1 for i in h.item_ids] for u, h in train.items()}
        report = TrainReport(device=str(dev))
        start = time.perf_counter()
        on_improve = (lambda: enc.save(checkpoint_dir)) if checkpoint_dir is not None else None
        best_state, report = _train(
            enc, seqs, valid, config, dev, report, epochs=config.epochs, progress=progress, on_improve=on_improve
        )
        report.train_seconds = time.perf_counter() - start
        enc.model.load_state_dict(best_state)
        enc.model.to("cpu").eval()
        if (config.refit_with_valid if refit is None else refit) and valid:
            final = enc.refit(data, max(report.best_epoch, 1), device=device, progress=progress)
            report.refit_seconds = final.refit_seconds
            return final, report
        return enc, report

    def refit(
        self, data: InteractionData, epochs: int, *, device: str = "auto", progress: bool = True
    ) -> SASRecEncoder:
        """A new model trained from scratch for ``epochs`` on train + valid items (the history
        seen at test time), with this encoder's settings."""
        dev = resolve_device(device)
        enc = type(self)(self.item_ids, self.config)
        full = data.histories(splits=(S.TRAIN, S.VALID))
        seqs = {u: [enc.item_index[i] + 1 for i in h.item_ids] for u, h in full.items()}
        start = time.perf_counter()
        _train(enc, seqs, {}, self.config, dev, TrainReport(), epochs=epochs, progress=progress)
        enc.refit_seconds = time.perf_counter() - start
        enc.model.to("cpu").eval()
        return enc


def _valid_ndcg10(
    enc: SASRecEncoder, seqs: dict[str, list[int]], valid: dict[str, tuple[str, ...]], dev: torch.device
) -> float:
    users = [u for u in valid if u in seqs]
    model = enc.model
    model.eval()
    ndcgs = []
    with torch.no_grad():
        for start in range(0, len(users), 512):
            batch = users[start : start + 512]
            q = model.user_vectors(pad_left([seqs[u] for u in batch], enc.config.max_len).to(dev))
            scores = q @ model.item_vectors().T  # (B, N)
            mask = torch.zeros_like(scores, dtype=torch.bool)
            for row, u in enumerate(batch):
                mask[row, torch.tensor(seqs[u], device=dev) - 1] = True
            width = max(len(valid[u]) for u in batch)
            targets = torch.tensor([[enc.item_index[i] for i in valid[u]] + [-1] * (width - len(valid[u]))
                                    for u in batch], device=dev)  # fmt: skip  # (B, T), -1 padding
            ndcgs.append(ndcg_at(target_ranks(scores, targets, mask).cpu().numpy(), 10))
    return float(np.concatenate(ndcgs).mean()) if ndcgs else 0.0


def _train(
    enc: SASRecEncoder,
    seqs: dict[str, list[int]],
    valid: dict[str, tuple[str, ...]],
    config: SASRecConfig,
    dev: torch.device,
    report: TrainReport,
    *,
    epochs: int,
    progress: bool,
    on_improve: Callable[[], object] | None = None,
) -> tuple[dict[str, torch.Tensor], TrainReport]:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    enc.model = SASRec(len(enc.item_ids), config).to(dev)
    model = enc.model
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, targets = training_windows(list(seqs.values()), config.max_len)
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, epochs + 1), desc="sasrec", unit="epoch", disable=not progress, leave=False)
    stale = 0
    lengths = (targets > 0).sum(dim=1).float()
    for epoch in bar:
        model.train()
        # Length bucketing: windows of similar length share a batch (little padding to compute),
        # with random jitter so batches differ between epochs, and batches in random order.
        order = torch.argsort(lengths + torch.rand(len(lengths), generator=gen) * config.max_len * 0.1)
        batches = list(torch.split(order, config.batch_size))
        total = 0.0
        for b in torch.randperm(len(batches), generator=gen).tolist():
            idx = batches[b]
            # Trim leading columns that are padding in every row of the batch.
            x, y = inputs[idx], targets[idx]
            first = int((y > 0).float().argmax(dim=1).min())
            x, y = x[:, first:].to(dev), y[:, first:].to(dev)
            loss = model.loss(x, y, generator=None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        report.epochs_run = epoch
        if not valid:
            best_state = model.state_dict()
            bar.set_postfix(loss=f"{total / len(inputs):.3f}")
            continue
        ndcg = _valid_ndcg10(enc, seqs, valid, dev)
        report.valid_ndcg10.append(ndcg)
        bar.set_postfix(loss=f"{total / len(inputs):.3f}", valid_ndcg10=f"{ndcg:.4f}")
        if ndcg > report.best_valid_ndcg10:
            report.best_valid_ndcg10, report.best_epoch, stale = ndcg, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if on_improve is not None:
                on_improve()
        else:
            stale += 1
            if stale >= config.patience:
                break
    return best_state, report
