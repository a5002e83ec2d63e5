"""Fine-tuning settings: examples, LoRA, training. One validated model, loadable from YAML."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragrec.tasks import task_names

__all__ = ["FinetuneConfig", "ResidualConfig", "RerankerConfig"]


class ResidualConfig(BaseModel):
    """Settings of the residual ranker's training. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(5, ge=2, description="Out-of-fold retrievers for the training lists (users split in folds).")
    candidates: int = Field(20, ge=2, le=100, description="Candidates per list (one is the target).")
    examples: int | None = Field(
        3000, ge=1, description="Training lists sampled from all eligible positions (None: every one)."
    )
    epochs: float = Field(2.0, gt=0, description="Passes over the examples.")
    top_layers: int = Field(
        4, ge=1, description="Transformer layers with LoRA, counted from the top; the rest is cached."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters (in the top layers only).",
    )
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate of the LoRA weights.")
    scale_init: float = Field(
        0.0, ge=0, description="The LLM's scale when training starts. 0: LoRA gets no gradient until the scale has "
        "moved (it is the factor of the LoRA's effect); > 0: LoRA learns from the first step. Either way step 0, the "
        "fusion alone, is validated and kept when no later state beats it.",
    )  # fmt: skip
    scale_learning_rate: float = Field(2e-2, gt=0, description="AdamW learning rate of the LLM's scale.")
    grad_accum: int = Field(8, ge=1, description="Examples per optimizer step.")
    eval_every: int = Field(50, ge=1, description="Optimizer steps between validations.")
    valid_users: int = Field(300, ge=10, description="Validation users scored at each validation.")
    patience: int = Field(4, ge=1, description="Validations without improvement before stopping.")
    max_minutes: float | None = Field(None, gt=0, description="Time limit of the training loop (best state kept).")
    seed: int = Field(0, description="Folds, sampling, shuffles, LoRA init.")


class RerankerConfig(BaseModel):
    """Settings of the learning-to-rank stage (:mod:`ragrec.finetune.ltr`). Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(5, ge=2, description="Out-of-fold retrievers for the training lists (users split in folds).")
    candidates: int = Field(20, ge=2, le=100, description="Candidates per list (one is the target).")
    llm_features: bool = Field(
        True, description="Also fit the reranker with the LLM's features (title similarity in its hidden states); "
        "the one without them is always fitted, and validation chooses.",
    )  # fmt: skip
    vector_layer: int | None = Field(None, ge=1, description="Hidden layer of the LLM item vectors (None: the middle).")
    max_history: int = Field(10, ge=1, description="Recent history items the LLM similarity features read.")
    learning_rate: float = Field(0.03, gt=0, description="LightGBM shrinkage.")
    num_leaves: int = Field(63, ge=2, description="LightGBM leaves per tree.")
    min_data_in_leaf: int = Field(50, ge=1, description="LightGBM: fewest candidates in a leaf.")
    max_rounds: int = Field(2000, ge=1, description="Boosting rounds at most.")
    early_stopping: int = Field(100, ge=1, description="Rounds without a validation NDCG@10 gain before stopping.")
    threads: int = Field(0, ge=0, description="LightGBM threads (0: its default, all cores).")
    seed: int = Field(0, description="Folds, bagging.")


class FinetuneConfig(BaseModel):
    """How a scenario's adapter is trained. Unknown keys are rejected (the error names them)."""

    model_config = ConfigDict(extra="forbid")

    recipe: Literal["auto", "reranker", "residual", "classic"] = Field(
        "auto", description="reranker: the learning-to-rank stage over the first stage, item priors, transitions and "
        "the LLM's item vectors (ragrec.finetune.ltr; rank only, EASE first stage; settings in `reranker`; no LoRA "
        "training); residual: the retriever-anchored LoRA ranker (ragrec.finetune.residual; settings in `residual`); "
        "classic: instruction tuning on the mixture below; auto: reranker where it applies (a rank-only mixture over "
        "an EASE retriever), else classic, and says which.",
    )  # fmt: skip
    reranker: RerankerConfig = Field(default_factory=RerankerConfig, description="Settings of the reranker recipe.")
    residual: ResidualConfig = Field(default_factory=ResidualConfig, description="Settings of the residual recipe.")

    # ---- examples (all from training-split interactions only)
    mixture: dict[str, float] = Field(
        default_factory=lambda: {"rank": 1.0},
        description="Share of each task among the examples (rank, rate, explain, chat); normalised. "
        "A task without its data (no ratings; no review text and no titles) is dropped and reported.",
    )
    examples: int = Field(
        1000,
        ge=1,
        description="Training examples in all (before dropping tasks without data); "
        "for chat, conversations (one to three turns, an example each).",
    )
    positions: int = Field(
        1, ge=1, description="Targets per user, counted back from the end of their training sequence."
    )
    candidates: int = Field(20, ge=2, le=100, description="Lettered candidates in a rank example (one is the target).")
    hard_negatives: float = Field(
        0.75, ge=0, le=1, description="Share of a rank example's negatives taken from the retriever's top results "
        "(the rest are random catalog items).",
    )  # fmt: skip
    target_retrieved: bool = Field(
        True, description="Rank examples only where the retriever ranks the target in its top `candidates` "
        "(as at serving time, where the LLM only sees retrieved items); hard negatives are drawn from that same list.",
    )  # fmt: skip
    rank_loss: Literal["choices", "vocab"] = Field(
        "choices", description="Rank answers: cross-entropy over the candidates' letters (the scores the ranker "
        "reads) or over the whole vocabulary.",
    )  # fmt: skip
    max_review_chars: int = Field(400, ge=20, description="Explain targets: review text cut at a sentence end.")
    min_review_chars: int = Field(40, ge=1, description="Explain targets: shorter reviews are skipped.")
    explain_targets: Literal["auto", "evidence", "reviews"] = Field(
        "auto", description="Explain answers: `evidence`, a sentence naming the history items that drove the item "
        "and the categories it shares with them (catalogs with titles); `reviews`, the user's own review of it; "
        "`auto`, the evidence sentence where the catalog has titles followed by the review where one exists.",
    )  # fmt: skip
    seed: int = Field(0, description="Seed of example sampling, negative sampling, shuffling and training.")

    # ---- LoRA
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters, or 'all-linear'.",
    )
    lora_layers: int | None = Field(
        None, ge=1, description="Adapt only the last N transformer layers (gradients then stop below them: "
        "training is faster); None adapts every layer.",
    )  # fmt: skip
    quantization: Literal["auto", "none", "4bit"] = Field(
        "auto", description="Base model during training: auto = 4-bit NF4 (QLoRA) on CUDA, none on the CPU."
    )

    # ---- training
    epochs: float = Field(1.0, gt=0, description="Passes over the examples.")
    max_steps: int = Field(-1, description="Optimizer steps; overrides epochs when > 0.")
    max_minutes: float | None = Field(
        None, gt=0, description="Time limit of the training loop, its validations and the final validation "
        "(stopping early enough for the final one, estimated from the last); the best adapter is saved and the "
        "stop reported. Not counted: data preparation, retriever training, example building, and the fusion "
        "scoring that `ragrec finetune` runs after training (see fusion_users).",
    )  # fmt: skip
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (linear decay, warmup below).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(1, ge=1, description="Examples per forward pass, per device.")
    grad_accum: int = Field(8, ge=1, description="Forward passes per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    eval_steps: int = Field(25, ge=1, description="Optimizer steps between validations (and checkpoints).")
    eval_users: int = Field(100, ge=1, description="Validation users scored at each validation (LLM NDCG@10).")
    patience: int = Field(3, ge=1, description="Validations without improvement before stopping early.")
    fusion_users: int = Field(
        300,
        ge=0,
        description="Validation users scored after training (by `ragrec finetune`) to decide how the LLM's score is "
        "fused with the retriever's: a weight, or a learned fusion when it is better out of sample (0: LLM alone).",
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is always kept).")
    keep_checkpoints: bool = Field(
        False, description="Keep the checkpoint folder (<adapter>.work) after a finished run; by default it is "
        "removed once the best adapter is saved (an interrupted run keeps it for --resume).",
    )  # fmt: skip
    logging_steps: int = Field(5, ge=1, description="Optimizer steps between loss logs.")

    @field_validator("mixture")
    @classmethod
    def _mixture(cls, v: dict[str, float]) -> dict[str, float]:
        trainable = task_names(trainable=True)
        unknown = set(v) - set(trainable)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)} in mixture; valid: {', '.join(trainable)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("mixture weights must be >= 0 with a positive sum")
        return {k: float(w) for k, w in v.items() if w > 0}

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if "rank" in self.mixture and self.candidates < 2:
            raise ValueError("rank examples need candidates >= 2")
        return self
