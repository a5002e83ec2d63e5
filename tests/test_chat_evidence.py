"""Conversation state, evidence attribution, decoding control and the stricter grounding check."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MOVIES, hash_embedder, movie_data, tiny_scenario
from ragrec import Item
from ragrec.inference import Recommender, RecommenderConfig, load_model
from ragrec.inference.chat import intent, resolve, wanted_categories
from ragrec.inference.evidence import evidence_for
from ragrec.inference.explain import Explainer, ExplanationStream
from ragrec.inference.grounding import TitleMatcher, repetition, sentences
from ragrec.retrieval import EASEConfig, EASEEncoder, Retriever, TextEncoder, TextEncoderConfig

ITEMS = [
    Item("1", "Heat", 1995, ("Crime", "Thriller")),
    Item("2", "Casino", 1995, ("Crime", "Drama")),
    Item("3", "Alien", 1979, ("Horror", "Sci-Fi")),
    Item("4", "Conspiracy Theory", 1997, ("Action", "Thriller")),
    Item("5", "Faster Pussycat! Kill! Kill!", 1965, ("Action",)),
    Item("6", "Fargo", 1996, ("Crime", "Drama")),
]


# ---------------------------------------------------------------- evidence
def test_ease_evidence_is_the_exact_decomposition():
    data = movie_data()
    enc = EASEEncoder.fit(data, EASEConfig(l2=10.0, decay=0.8))
    history = ["m1", "m3", "m5", "m3", "m7"]  # a repeat: its newest occurrence counts
    items = ["m0", "m2", "m4", "m9"]
    ids, contrib = enc.contributions(history, items)
    assert ids == ["m1", "m5", "m3", "m7"]  # distinct, oldest first by newest occurrence
    full = enc.scores([history])[0][enc.indices(items)]
    np.testing.assert_allclose(contrib.sum(axis=0), full, rtol=1e-5, atol=1e-6)
    # each term by hand: decay ** age * B[h, item]
    age = {"m7": 0, "m3": 1, "m5": 2, "m1": 4}
    for r, h in enumerate(ids):
        for c, i in enumerate(items):
            expected = 0.8 ** age[h] * enc.weights[enc.item_index[h], enc.item_index[i]]
            assert contrib[r, c] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_leave_one_out_evidence_for_other_encoders():
    data = movie_data()
    enc = TextEncoder.fit(data, TextEncoderConfig(fields=("title", "categories")), embedder=hash_embedder)
    history, items = ["m1", "m3", "m6"], ["m0", "m11"]
    ids, contrib = enc.contributions(history, items)
    assert ids == history and contrib.shape == (3, 2)
    cols = enc.indices(items)
    full = enc.scores([history])[0][cols]
    for r, h in enumerate(ids):
        without = enc.scores([[x for x in history if x != h]])[0][cols]
        np.testing.assert_allclose(contrib[r], full - without, rtol=1e-5, atol=1e-6)


def test_evidence_for_picks_positive_contributions_with_shares():
    data = movie_data()
    enc = EASEEncoder.fit(data, EASEConfig(l2=1.0))
    catalog = {i: data.item(i) for i in data.item_ids()}
    history = ["m1", "m2", "m3", "m4"]
    ev = evidence_for(enc, catalog, history, ["m5", "m6"], top=2)
    ids, contrib = enc.contributions(history, ["m5", "m6"])
    for c, evs in enumerate(ev):
        col = contrib[:, c]
        best = [ids[j] for j in np.argsort(-col, kind="stable")[:2] if col[j] > 0]
        assert [e.item_id for e in evs] == best
        for e in evs:
            assert e.method == "exact" and e.weight > 0 and 0 < e.share <= 1
            assert e.share == pytest.approx(e.weight / col[col > 0].sum(), rel=1e-5)
            assert set(e.shared) <= set(catalog[["m5", "m6"][c]].categories)


# ---------------------------------------------------------------- grounding and text quality
def test_sentences_keep_titles_and_abbreviations_whole():
    m = TitleMatcher(ITEMS)
    text = "Faster Pussycat! Kill! Kill! is wild. Dr. Smith liked it! And then"
    done, rest = m.sentences(text)
    assert done == ["Faster Pussycat! Kill! Kill! is wild.", "Dr. Smith liked it!"] and rest == "And then"
    assert sentences("No end here") == ([], "No end here")


def test_degenerate_text_is_refused():
    m = TitleMatcher(ITEMS)
    g = m.check("This movie is a classic of the genre of the genre of the genre.", {"1", "6"}, about={"6"})
    assert not g.grounded and g.degenerate
    assert repetition(["algorithm", "s", "algorithm", "s", "algorithm"])
    assert repetition(["you", "enjoyed", "heat", "and", "casino", "so", "try", "fargo"]) is None
    assert (
        repetition(["you", "enjoyed", "<1>", "and", "<2>", "and", "users", "choose", "<6>"]) is None
    )  # a list of titles
    assert repetition(["you", "may", "like", "<1>", "1996", "<2>", "1996", "and", "<6>", "1997"]) is None
    assert m.check("You enjoyed Heat and Casino and Fargo.", {"1", "2", "6"}).grounded
    assert m.masked_words("You enjoyed Heat and Fargo") == ["you", "enjoyed", "<1>", "and", "<6>"]
    assert m.check("Heat and Heat and Heat and Heat fans rejoice.", {"1"}).grounded is False
    assert "degenerate" in m.check("the genre of the genre of the genre", {"1"}).reason()


def test_a_title_written_wrong_is_refused():
    m = TitleMatcher([*ITEMS, Item("7", "Young Guns II", 1990, ("Western",)), Item("8", "Apollo 13", 1995, ("Drama",))])
    g = m.check("You may like Young Gangs II. Alien is there because of Heat in your history.", {"1", "3", "7"})
    assert not g.grounded and "young gangs ii" in g.unknown and "not in the catalog" in g.reason()
    assert m.misquoted("it also has Apollo 20") == ["apollo 20"]
    assert m.check("You may like Young Guns II and Apollo 13; Heat fans do.", {"1", "7", "8"}).grounded
    assert m.misquoted("Young people and Faster cars") == []  # a title's first word, then other words


def test_recommended_item_presented_as_history_is_refused():
    m = TitleMatcher(ITEMS)
    hist = ["1", "2"]
    bad = m.check("This movie fits your history of Conspiracy Theory.", {"1", "2", "4"}, about={"4"}, history=hist)
    assert bad.misattributed == ("4",) and not bad.grounded
    ok = m.check("You watched Heat, so Conspiracy Theory should suit you.", {"1", "2", "4"}, about={"4"}, history=hist)
    assert ok.grounded and ok.misattributed == ()


def test_attributes_of_any_history_item_are_accepted():
    m = TitleMatcher(ITEMS)
    # the year belongs to Casino, a history item the text does not name
    g = m.check("Fargo fits your taste for films from 1995.", {"1", "2", "6"}, about={"6"}, history=["1", "2"])
    assert g.grounded, g.reason()
    # a year nothing in the history or the item has is still refused
    assert not m.check(
        "Fargo fits your taste for films from 1971.", {"1", "2", "6"}, about={"6"}, history=["1", "2"]
    ).grounded
    # a category a fifth of the history has is a fair statement about the user's taste
    assert m.check("You like thrillers, and Fargo is next.", {"1", "4", "6"}, about={"6"}, history=["1", "4"]).grounded
    assert not m.check(
        "You like thrillers, and Fargo is next.", {"1", "6"}, about={"6"}, history=["1", "2", "3"]
    ).grounded


def test_echo_of_the_prompt_is_refused():
    m = TitleMatcher(ITEMS)
    prompt = "In one or two sentences, tell me why I may like the recommended movie"
    g = m.check("Tell me why I may like the recommended movie.", {"6"}, about={"6"}, prompt=prompt)
    assert g.echo and not g.grounded
    assert m.check("The user's question is a classic example.", {"6"}).echo
    assert not m.check("Fargo is a dark crime comedy.", {"6"}, about={"6"}, prompt=prompt).echo
    # the prompt's list layout copied back is not an answer
    assert m.check("1. Fargo (1996) | Crime, Drama\n2.", {"6"}, about={"6"}).echo
    assert m.check("- Fargo, 1996.", {"6"}, about={"6"}).echo
    assert not m.check("Fargo (1996) is dark - and funny.", {"6"}, about={"6"}).echo
    # talk about the exchange, or a line broken mid-sentence (make demo's zero-shot chat once showed this)
    assert m.check("The best answer is indeed Fargo.", {"6"}, about={"6"}).echo
    assert m.check("Fargo has been added to the list of movies.", {"6"}, about={"6"}).echo
    assert m.check("Your message is not suitable for a movie night.", {"6"}, about={"6"}).echo
    assert m.check("But I'm asking about the first one: Fargo.", {"6"}, about={"6"}).echo
    assert m.check("Fargo is dark and funny\nThis one is next.", {"6"}, about={"6"}).echo
    assert not m.check("Fargo is dark and funny.\nIt is also short.", {"6"}, about={"6"}).echo
    assert not m.check("It answers your taste for crime: Fargo is next.", {"6"}, about={"6"}).echo


def test_stream_emits_only_checked_sentences():
    """A stream over a fixed text: the second sentence names an item outside the allowed set, so
    only the first is emitted, and the explanation is exactly what was streamed."""
    from ragrec.prompts import builtin_registry

    m = TitleMatcher(ITEMS)
    ex = Explainer.__new__(Explainer)
    ex.template, ex.matcher = builtin_registry().get("default", "explain"), m
    ctx = {"history": [ITEMS[0], ITEMS[1]], "item": ITEMS[5], "item_noun": "movie", "evidence": (), "prompt": ""}
    chunks = ["You liked Heat, so Far", "go should suit you. Alien is", " also great. More"]
    s = ExplanationStream(iter(chunks), ex, ctx, None)
    pieces = list(s)
    assert pieces == ["You liked Heat, so Fargo should suit you."]
    assert s.explanation.text == "".join(pieces) and s.explanation.fallback is None
    assert any("failed the check" in n for n in s.explanation.notes)
    # nothing passes: the data-built text is the one piece, never the rejected text
    s2 = ExplanationStream(iter(["Alien is the best. "]), ex, ctx, None)
    pieces2 = list(s2)
    assert pieces2 == [s2.explanation.text] and "Alien" not in pieces2[0] and s2.explanation.fallback


# ---------------------------------------------------------------- conversation state
def test_references_resolve_to_the_items_shown():
    shown = ["a", "b", "c", "d"]
    assert resolve("why would I like the first one?", shown) == ["a"]
    assert resolve("and the second?", shown) == ["b"]
    assert resolve("tell me about number 3", shown) == ["c"]
    assert resolve("what about the last one", shown) == ["d"]
    assert resolve("the last movie you mentioned", shown, mentioned=["x", "y"]) == ["y"]
    assert resolve("is that one funny?", shown, subject=["b"]) == ["b"]
    assert resolve("compare the first and the third", shown) == ["a", "c"]
    assert resolve("something for the first time in years", shown) == []
    assert resolve("why Heat?", shown, titles=[(4, "1")]) == ["1"]
    # words of a title are not references: "First" in "First Wives Club", "That" in "That Thing You Do!"
    assert resolve("something like First Wives Club", shown, titles=[(15, "w")], protected=[(15, 31)]) == ["w"]
    assert resolve("tell me about That Thing You Do!", shown, subject=["b"], titles=[(14, "t")],
                   protected=[(14, 32)]) == ["t"]  # fmt: skip
    assert intent("why would I like the first one?", ["a"], []) == "about"
    assert intent("something like Alien but funnier", ["3"], ["3"]) == "like"
    assert intent("any 90s comedies?", [], []) == "recommend"
    assert wanted_categories("but funnier", ["Comedy", "Horror"]) == ["Comedy"]
    assert wanted_categories("scary please", ["Comedy"]) == []  # the catalog has no horror


@pytest.fixture(scope="module")
def ease_rec(tiny_lm_dir):
    sc = tiny_scenario()
    sc.retriever = Retriever.build(EASEEncoder.fit(sc.data, EASEConfig(l2=1.0)), sc.data)
    return Recommender(load_model(str(tiny_lm_dir), device="cpu"), [sc], RecommenderConfig(candidates=6))


def test_chat_resolves_references_and_never_offers_seen_items(ease_rec):
    rec = ease_rec
    sc = rec.scenario()
    seen = set(sc.histories["u1"].item_ids)
    session = rec.chat("u1")
    first = session.recommendations(4)
    assert [i.item_id for i in first] == session.shown and not seen & set(session.shown)
    why = session.ask("why would I like the first one?")
    assert why.intent == "about" and why.references == (first[0].item_id,)
    assert [i.item_id for i in why.items] == [first[0].item_id] and why.items[0].evidence
    assert why.text and (why.fallback is None or why.items[0].evidence[0].title in why.text)
    alien = next(f"m{i}" for i, m in enumerate(MOVIES) if m[0] == "alien")
    like = session.ask("something like alien but funnier")
    offered = [i.item_id for i in like.items]
    assert like.intent == "like" and alien not in offered and not seen & set(offered)
    assert all("comedy" in sc.catalog[i].categories for i in offered) and "wanted: comedy" in like.notes
    second = session.ask("and the second one?")
    assert second.references == (offered[1],)  # ordinals index the list shown last
    again = session.ask("something I have seen, to watch again")
    assert again.include_seen and {i.item_id for i in again.items} <= seen


def test_recommendations_carry_evidence_and_explanations_use_it(ease_rec):
    out = ease_rec.recommend("u1", k=3)
    assert all(i.evidence for i in out.items)
    hist = set(ease_rec.scenario().histories["u1"].item_ids)
    assert all({e.item_id for e in i.evidence} <= hist for i in out.items)
    exp = ease_rec.explain(out.items[0].item_id, "u1")
    assert exp.evidence == out.items[0].evidence
    assert exp.text and not exp.text.endswith((",", " and"))  # whole sentences only
    fallback_rec = ease_rec.recommend(history=[], k=2)
    assert fallback_rec.fallback and all(i.evidence == () for i in fallback_rec.items)
