"""Service settings: one frozen, validated object (``ragrec serve`` builds it from its options)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["ServeSettings"]


class ServeSettings(BaseModel):
    """How ``ragrec serve`` listens, limits and batches. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface to listen on (loopback unless told otherwise).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    api_key: SecretStr | None = Field(
        None, description="When set, every endpoint but /health/* requires it (Authorization: Bearer KEY or X-API-Key)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (else 413).")
    max_message_chars: int = Field(4000, ge=16, description="Longest chat message or query accepted (else 400).")
    max_messages: int = Field(64, ge=1, description="Most messages in one chat request.")
    max_history: int = Field(1000, ge=1, description="Most items in a posted history.")
    max_feedback: int = Field(1000, ge=1, description="Most interactions or items in one POST.")
    request_timeout_s: float = Field(120.0, gt=0, description="A request that waits longer for the model gets 504.")
    micro_batching: bool = Field(True, description="Batch concurrent rank requests into one forward pass.")
    batch_window_ms: float = Field(10.0, ge=0, description="How long the first request of a batch waits for others.")
    max_batch: int = Field(16, ge=1, description="Most requests in one batch.")
    reload_interval_s: float = Field(
        5.0, ge=0, description="How often the service checks for a version published by `ragrec retrain` (0: never)."
    )
    chat_sessions: int = Field(256, ge=0, description="Conversations kept in memory (older ones are replayed).")
    log_user_text: bool = Field(False, description="Log user ids and texts (off: logs hold routes, status, timing).")
