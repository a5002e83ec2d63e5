"""ragrec's LangChain retriever and tools against LangChain's own standard suites (langchain-tests),
offline, on a tiny random model; plus what the suites do not check (metadata, personalisation)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core")
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ToolsUnitTests  # noqa: E402

from ragrec.inference import Recommender, RecommenderConfig, load_model  # noqa: E402
from ragrec.integrations.langchain import ExplainTool, RagrecRetriever, RecommendTool  # noqa: E402
from test_serve import ease_scenario  # noqa: E402

_RECS: dict[str, Recommender] = {}


@pytest.fixture(autouse=True)
def _recommender(tiny_lm_dir):
    if "rec" not in _RECS:
        loaded = load_model(str(tiny_lm_dir), device="cpu")
        _RECS["rec"] = Recommender(loaded, [ease_scenario()], RecommenderConfig(candidates=6, evidence=2))


class TestRagrecRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagrecRetriever]:
        return RagrecRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"recommender": _RECS["rec"]}

    @property
    def retriever_query_example(self) -> str:
        return "crime movies from the nineties"


class TestRagrecRetrieverForAUserStandard(TestRagrecRetrieverStandard):
    @property
    def retriever_constructor_params(self) -> dict:
        return {"recommender": _RECS["rec"], "user_id": "u1"}


class TestRecommendToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[RecommendTool]:
        return RecommendTool

    @property
    def tool_constructor_params(self) -> dict:
        return {"recommender": _RECS["rec"]}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"user_id": "u1", "k": 3}


class TestExplainToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[ExplainTool]:
        return ExplainTool

    @property
    def tool_constructor_params(self) -> dict:
        return {"recommender": _RECS["rec"]}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"user_id": "u1", "item_id": "m3"}


def test_documents_carry_item_metadata_and_personalise():
    rec = _RECS["rec"]
    docs = RagrecRetriever(recommender=rec, k=3).invoke("heat")
    assert docs[0].metadata["item_id"] == "m1" and docs[0].page_content.startswith("heat")
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3] and docs[0].metadata["source"] == "text"
    seen = set(rec.scenario().histories["u1"].item_ids)
    mine = RagrecRetriever(recommender=rec, user_id="u1", k=5).invoke("heat")
    assert not {d.metadata["item_id"] for d in mine} & seen and mine[0].metadata["source"] == "text+retriever"
    out = json.loads(RecommendTool(recommender=rec).invoke({"user_id": "u1", "k": 3}))
    assert len(out["items"]) == 3 and out["fallback"] is None
    out = json.loads(RecommendTool(recommender=rec).invoke({"user_id": "stranger", "k": 2}))
    assert out["fallback"].startswith("unknown user")
    ex = json.loads(ExplainTool(recommender=rec).invoke({"user_id": "u1", "item_id": "m3"}))
    assert ex["item_id"] == "m3" and ex["text"]
