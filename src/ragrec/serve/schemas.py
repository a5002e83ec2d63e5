"""Request and response models of the service (pydantic), including the OpenAI chat wire format."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ItemOut",
    "EvidenceOut",
    "RankedOut",
    "RecommendResponse",
    "SessionRecommendRequest",
    "FeedbackIn",
    "FeedbackResponse",
    "NewItem",
    "ItemsRequest",
    "ItemsResponse",
    "ExplanationOut",
    "SearchResponse",
    "ChatMessage",
    "ChatRequest",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemOut(BaseModel):
    item_id: str
    title: str | None = None
    year: int | None = None
    categories: list[str] = []
    brand: str | None = None
    description: str | None = None


class EvidenceOut(BaseModel):
    item_id: str
    title: str | None = None
    weight: float
    share: float


class RankedOut(BaseModel):
    item_id: str
    rank: int
    score: float
    retriever_score: float | None = None
    title: str | None = None
    evidence: list[EvidenceOut] = []


class RecommendResponse(BaseModel):
    user_id: str | None
    scenario: str
    task: str
    items: list[RankedOut]
    fallback: str | None = Field(None, description="Why the candidates did not come from the user's history.")
    notes: list[str] = []
    version: str = Field(description="The recommender version that answered.")


class SessionRecommendRequest(_Strict):
    history: list[str] = Field(description="Item ids the anonymous user interacted with, oldest first.")
    scenario: str | None = None
    n: int | None = Field(None, description="List length (default: 10, or every candidate when fewer).")
    task: str = Field("rank", description="A list-producing task (ragrec.tasks): rank or generate.")
    exclude: list[str] = []


class FeedbackIn(_Strict):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    scenario: str | None = None
    timestamp: int | None = Field(None, ge=0, description="Unix seconds; default: when received.")
    rating: float | None = Field(None, ge=0, le=10)


class FeedbackResponse(BaseModel):
    accepted: int
    stored: bool = Field(description="Written to the feedback database before this answer (false: memory only).")
    ids: list[int] = []
    notes: list[str] = []


class NewItem(_Strict):
    item_id: str = Field(min_length=1, max_length=256)
    title: str | None = Field(None, max_length=1000)
    year: int | None = Field(None, ge=0, le=3000)
    categories: list[str] = Field([], max_length=50)
    brand: str | None = Field(None, max_length=500)
    description: str | None = Field(None, max_length=5000)


class ItemsRequest(_Strict):
    scenario: str | None = None
    items: list[NewItem] = Field(min_length=1)


class ItemsResponse(BaseModel):
    scenario: str
    added: list[str]
    stored: bool
    retrievable_by: list[str] = Field(description="Where the new items can be found now (text search, user lists).")


class ExplanationOut(BaseModel):
    item_id: str
    text: str
    grounded: bool
    fallback: str | None = None
    notes: list[str] = []
    evidence: list[EvidenceOut] = []
    cited: list[str] = []


class SearchResponse(BaseModel):
    scenario: str
    query_chars: int
    items: list[RankedOut]
    notes: list[str] = []


# ---------------------------------------------------------------------- OpenAI chat wire format
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (content parts of type ``text`` joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``. Sampling fields the service does not use (temperature,
    top_p, ...) are accepted and ignored: answers are greedy and grounding-checked."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="A scenario name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = Field(None, description="The user id whose history grounds the answer.")
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


def completion_id() -> str:
    import uuid

    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
