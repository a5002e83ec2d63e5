"""LangChain components over a :class:`~ragrec.inference.Recommender` (``pip install ragrec[langchain]``).

* :class:`RagrecRetriever`: a text query, optionally for a user, to ``Document`` s of catalog items
  (``page_content``: the item's text; ``metadata``: item id, score, rank, source, fallback, ...).
* :class:`RecommendTool` and :class:`ExplainTool`: recommend for a user and explain an item for a
  user, with typed input schemas, for agents.

They pass LangChain's standard test suites (``langchain-tests``: ``RetrieversIntegrationTests``,
``ToolsUnitTests``), run offline in ragrec's tests.
"""

from __future__ import annotations

import json
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ragrec.integrations.langchain needs langchain-core: pip install 'ragrec[langchain]'") from exc
from pydantic import BaseModel, ConfigDict, Field

from ragrec.data.text import render_item_text

__all__ = ["RagrecRetriever", "RecommendTool", "ExplainTool", "RecommendInput", "ExplainInput"]


class RagrecRetriever(BaseRetriever):
    """Catalog items for a text query (:meth:`Recommender.search`): the scenario's text encoder,
    fused with the user's own retrieval when ``user_id`` is set (items they have seen left out).
    ``k`` (default 4) can also be passed per call: ``retriever.invoke("90s crime", k=3)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recommender: Any = Field(description="A ragrec Recommender.")
    scenario: str | None = Field(None, description="Scenario (default: the recommender's first).")
    user_id: str | None = Field(None, description="Personalise for this known user (per call: user_id=...).")
    k: int = Field(4, ge=1, le=1000, description="Documents returned.")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = int(kwargs.get("k", self.k))
        user = kwargs.get("user_id", self.user_id)
        rec = self.recommender
        result = rec.search(query, user, scenario=self.scenario, k=k)
        sc = rec.scenario(result.scenario)
        source = "text" if user is None else "text+retriever"
        docs = []
        for it in result.items:
            item = sc.catalog[it.item_id]
            meta = {"item_id": it.item_id, "score": it.score, "rank": it.rank, "source": source,
                    "fallback": result.fallback, "scenario": sc.name, "title": item.title, "year": item.year,
                    "categories": list(item.categories),
                    "evidence": [e.item_id for e in it.evidence]}  # fmt: skip
            docs.append(Document(page_content=render_item_text(item), metadata=meta, id=it.item_id))
        return docs


class RecommendInput(BaseModel):
    """Input of :class:`RecommendTool`."""

    user_id: str = Field(description="The user to recommend for.")
    k: int = Field(5, ge=1, le=100, description="How many items.")


class ExplainInput(BaseModel):
    """Input of :class:`ExplainTool`."""

    user_id: str = Field(description="The user the explanation is for.")
    item_id: str = Field(description="The catalog item to explain.")


class RecommendTool(BaseTool):
    """Recommend catalog items for a user: returns JSON with the ranked items (id, title, score)
    and any fallback (unknown user: popular items)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "ragrec_recommend"
    description: str = (
        "Recommend catalog items for a user. Input: user_id and k (how many). Returns JSON with the ranked items "
        "(item_id, title, score) and a fallback note when the user is unknown."
    )
    args_schema: type[BaseModel] = RecommendInput
    recommender: Any = Field(description="A ragrec Recommender.")
    scenario: str | None = None

    def _run(self, user_id: str, k: int = 5, **kwargs: Any) -> str:
        rec = self.recommender
        k = min(k, rec.config.candidates)
        res = rec.recommend(user_id, scenario=self.scenario, k=k)
        sc = rec.scenario(res.scenario)
        items = [{"item_id": i.item_id, "title": sc.catalog[i.item_id].title, "rank": i.rank,
                  "score": round(i.score, 4)} for i in res.items]  # fmt: skip
        return json.dumps({"user_id": user_id, "items": items, "fallback": res.fallback}, ensure_ascii=False)


class ExplainTool(BaseTool):
    """Explain why an item suits a user, grounded in their history (falls back to a data-built
    explanation, reported, when the model's text fails the grounding check)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "ragrec_explain"
    description: str = (
        "Explain why a catalog item suits a user, citing the user's history. Input: user_id and item_id. "
        "Returns JSON with the explanation text, whether the model's own text passed the grounding check, "
        "and the history items it rests on."
    )
    args_schema: type[BaseModel] = ExplainInput
    recommender: Any = Field(description="A ragrec Recommender.")
    scenario: str | None = None

    def _run(self, user_id: str, item_id: str, **kwargs: Any) -> str:
        ex = self.recommender.explain(item_id, user_id, scenario=self.scenario)
        return json.dumps({"item_id": item_id, "text": ex.text, "grounded": ex.grounded and ex.fallback is None,
                           "fallback": ex.fallback, "evidence": [e.item_id for e in ex.evidence]},
                          ensure_ascii=False)  # fmt: skip
