"""No held-out target reaches the model: every prompt the evaluation code itself renders (LLM
ranking for validation and test, `ragrec eval llm`, rating validation, explanation scoring) is
captured at the tokenizer and checked for held-out titles, ids, ratings and reviews."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import hash_embedder
from ragrec import schema as S
from ragrec.data import InteractionData
from ragrec.data.split import leave_one_out

USERS = 8


def _data() -> InteractionData:
    """Train items are shared ("film k"); each user's validation and test items are their own
    ("validpick u", "testpick u", ids "vid-u" / "tid-u"), so no other user's history can hold them.
    Test interactions carry a marked review and the rating 1 (train ratings are 4 or 5)."""
    rows = []
    for u in range(USERS):
        for t in range(5):
            rows.append((f"u{u}", f"f{(u + t) % 10}", t, 4.0 + (t % 2), f"plain train review {t}."))
        rows.append((f"u{u}", f"vid-{u}", 10, 5.0, "a fine validation review of enough length to count here."))
        rows.append((f"u{u}", f"tid-{u}", 11, 1.0, f"SECRETREVIEW{u} the held-out test review, long enough to count."))
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING, S.REVIEW])
    ids = [f"f{k}" for k in range(10)] + [f"vid-{u}" for u in range(USERS)] + [f"tid-{u}" for u in range(USERS)]
    titles = [f"film {k}" for k in range(10)] + [f"validpick {u}" for u in range(USERS)]
    titles += [f"testpick {u}" for u in range(USERS)]
    items = pd.DataFrame({S.ITEM_ID: ids, S.TITLE: titles, S.YEAR: [1990 + j for j in range(len(ids))],
                          S.CATEGORIES: [["drama"]] * len(ids)})  # fmt: skip
    return leave_one_out(InteractionData.from_frames("leak", inter, items))


def _history_sections(prompt: str) -> list[str]:
    """The history blocks of a rendered prompt (between '... oldest first:' and the next blank line):
    the rating prompt shows each history item with its rating there, so a held-out item absent from
    it means its rating is absent too."""
    return re.findall(r"oldest first:\n(.*?)(?:\n\n|$)", prompt, flags=re.S)


@pytest.fixture()
def captured(monkeypatch, tiny_lm_dir):
    from ragrec.inference.models import load_model

    loaded = load_model(str(tiny_lm_dir), device="cpu")
    prompts: list[str] = []
    cls = type(loaded.tokenizer)
    original = cls.apply_chat_template

    def capture(self, conversation, *args, **kwargs):
        out = original(self, conversation, *args, **kwargs)
        prompts.append(out if isinstance(out, str) else "\n".join(m["content"] for m in conversation))
        return out

    monkeypatch.setattr(cls, "apply_chat_template", capture)
    return loaded, prompts


def _scenario():
    from ragrec.inference import Scenario, ScenarioConfig
    from ragrec.retrieval import PopularityEncoder, Retriever, TextEncoder, TextEncoderConfig

    data = _data()
    text = TextEncoder.fit(data, TextEncoderConfig(fields=("title", "categories")), embedder=hash_embedder)
    return Scenario(ScenarioConfig(name="movies", item_noun="movie"), data,
                    Retriever.build(PopularityEncoder.fit(data), data), text)  # fmt: skip


def _assert_clean(prompts: list[str], split: str) -> None:
    assert prompts, "nothing was captured"
    held = [f"testpick {u}" for u in range(USERS)] + (
        [f"validpick {u}" for u in range(USERS)] if split == S.VALID else []
    )
    for prompt in prompts:
        assert "SECRETREVIEW" not in prompt  # a held-out review
        assert not re.search(r"\btid-\d|\bvid-\d", prompt)  # item ids never reach a prompt
        for section in _history_sections(prompt):
            for title in held:
                assert title not in section, (title, section)


def test_llm_rank_and_eval_prompts_hold_no_target(captured, tmp_path):
    from ragrec.cli import main
    from ragrec.eval.llm import score_llm
    from ragrec.inference import Recommender, RecommenderConfig, save_recommender

    loaded, prompts = captured
    rec = Recommender(loaded, [_scenario()], RecommenderConfig(candidates=6))
    for split in (S.VALID, S.TEST):
        prompts.clear()
        scores = score_llm(rec, "movies", split=split, progress=False)
        assert len(scores.users) == USERS
        _assert_clean(prompts, split)
    # `ragrec eval llm` (validation tuning + test scoring), in process so the capture sees it.
    sc = _scenario()
    sc.text = None
    folder = save_recommender(tmp_path / "rec", [sc], RecommenderConfig(model=str(loaded.source.split(" ")[0]),
                                                                         device="cpu", candidates=6))  # fmt: skip
    prompts.clear()
    main(["eval", "llm", str(folder), "--out", str(tmp_path / "report"), "--tune-users", "8", "--no-learned-fusion"])
    assert (tmp_path / "report.json").is_file()
    _assert_clean(prompts, S.TEST)  # validation and test prompts: no test target in any history


def test_rate_and_explain_prompts_hold_no_target(captured):
    from ragrec.eval.explain import evaluate_explanations
    from ragrec.finetune.trainer import _validator
    from ragrec.inference import Recommender, RecommenderConfig

    loaded, prompts = captured
    rec = Recommender(loaded, [_scenario()], RecommenderConfig(candidates=6))
    validate = _validator(rec, "movies", [f"u{u}" for u in range(USERS)], "rating_mae")
    metrics = validate()
    assert metrics["rating_mae"] >= 0 and "rating_rmse" in metrics
    _assert_clean(prompts, S.VALID)
    prompts.clear()
    ev = evaluate_explanations(rec, "movies", split=S.TEST, progress=False)
    assert len(ev.users) == USERS
    _assert_clean(prompts, S.TEST)
    assert all(any(f"testpick {u[1:]}" in p for p in prompts) for u in ev.users)  # the explained item is shown
