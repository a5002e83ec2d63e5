"""``RecommenderConfig``: how the LLM stage runs (model, quantization, candidates, budgets)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragrec.inference.models import DEFAULT_MODEL
from ragrec.prompts import PromptBudget

__all__ = ["RecommenderConfig"]


class RecommenderConfig(BaseModel):
    """How the LLM stage runs. Unknown keys are rejected. Frozen: change a setting with
    ``rec.config = rec.config.model_copy(update={...})``, which rebuilds what depends on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="Base LM: built-in alias, Hub id, local folder or .gguf file.")
    quantization: Literal["none", "8bit", "4bit"] = Field("none", description="bitsandbytes quantization.")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    trust_remote_code: bool = Field(False, description="Run model code from the Hub (off unless asked).")
    candidates: int = Field(
        20, ge=1, le=100, description="Retrieved candidates the LLM ranks (lettered A-Z, then AA, AB, ...)."
    )
    permutations: int = Field(1, ge=1, description="Cyclic shifts averaged against position bias.")
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass.")
    max_history: int = Field(20, ge=0, description="Most recent history items shown in a prompt.")
    max_item_chars: int = Field(90, ge=16, description="Longest rendered item line in a prompt.")
    max_user_chars: int = Field(1000, ge=16, description="Longest chat message kept (the rest is cut, reported).")
    max_tokens: int = Field(2048, ge=64, description="Longest prompt in tokens (also capped by the model's context).")
    chat_candidates: int = Field(8, ge=1, le=26, description="Items retrieved for each chat turn.")
    chat_turns: int = Field(3, ge=0, description="Earlier chat turns kept in the prompt.")
    evidence: int = Field(
        3, ge=0, le=20, description="History items attached to each recommended item as its evidence "
        "(the ones that moved its first-stage score most; 0: none).",
    )  # fmt: skip

    backend: str = Field(
        "transformers", description="Model backend that scores candidate letters and rating digits and writes "
        "text (registered in ragrec.inference.backends).",
    )  # fmt: skip

    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the backend (llamacpp: quant = F16 | Q8_0 | Q4_K_M | Q4_0 | "
        "IQ4_NL for an export of the model's weights instead of its own GGUF, threads, flash_attn; "
        "vllm: gpu_memory_utilization, max_lora_rank).",
    )  # fmt: skip

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from ragrec.inference.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; registered: {', '.join(BACKENDS.names())}")
        return v

    def budget(self, context: int | None = None) -> PromptBudget:
        max_tokens = min(self.max_tokens, context) if context else self.max_tokens
        return PromptBudget(self.max_history, self.max_item_chars, self.max_user_chars, max_tokens)
