"""Grounding checks: which catalog items a text names, and unknown quoted titles."""

from __future__ import annotations

from ragrec import Item
from ragrec.inference.grounding import TitleMatcher, attribute_explanation

ITEMS = [
    Item("1", "Heat", 1995, ("Crime", "Thriller")),
    Item("2", "Usual Suspects, The", 1995, ("Crime",)),
    Item("3", "Alien", 1979, ("Horror", "Sci-Fi")),
    Item("4", "Aliens", 1986, ("Action", "Sci-Fi")),
    Item("5", "Up", 2009, ("Animation",)),  # too short to match
]


def test_cites_whole_titles_longest_first():
    m = TitleMatcher(ITEMS)
    assert m.cited("Since you liked The Usual Suspects and heat, try Aliens.") == ["2", "1", "4"]
    assert m.cited("An alien-free pick: Heatwave") == ["3"]  # 'alien' as a word; 'Heatwave' is not 'Heat'
    assert m.cited("It sped up") == []


def test_check_flags_outside_and_unknown_titles():
    m = TitleMatcher(ITEMS)
    g = m.check('You loved "Heat" (1995), so "Heat 2: Return" and Alien fit.', allowed={"1"})
    assert g.cited == ("1", "3") and g.outside == ("3",) and g.unknown == ("Heat 2: Return",)
    assert not g.grounded
    ok = m.check('Like "Heat", it is a tense crime film.', allowed={"1"})
    assert ok.grounded and ok.cited == ("1",)


def test_attribute_explanation_uses_shared_categories():
    text = attribute_explanation(ITEMS[1], [ITEMS[2], ITEMS[0]], "movie")
    assert text == "You enjoyed Heat and Alien; Usual Suspects, The is also Crime."
    assert "popular" in attribute_explanation(ITEMS[0], [], "movie")


def test_attribute_explanation_names_untitled_evidence_by_id_and_description():
    capo = Item("B01", description="reviews mention: capo, spring")
    strap = Item("B02", description="reviews mention: leather, strap")
    text = attribute_explanation(capo, [strap, Item("B03")], "product", [strap])
    assert text == ("You enjoyed product B02 (reviews mention: leather, strap), and users with that taste often "
                    "choose product B01 (reviews mention: capo, spring).")  # fmt: skip
    assert (
        attribute_explanation(capo, [strap], "product")
        == "product B01 (reviews mention: capo, spring) is popular with users like you."
    )


def test_stated_categories_and_years_must_belong_to_allowed_items():
    m = TitleMatcher(ITEMS + [Item("6", "Titanic", 1997, ("Drama", "Romance")), Item("7", "2001", 1968, ("Sci-Fi",))])
    bad = m.check("Titanic is a gripping horror film from 1985, like the thrillers you watched.", allowed={"6", "1"})
    assert bad.unsupported == ("horror", "1985") and not bad.grounded  # thriller: Heat is allowed
    assert "stated categories or years" in bad.reason() and "horror" in bad.reason()
    good = m.check("Titanic (1997) is a romance, like the 1990s crime dramas you enjoyed.", allowed={"6", "1"})
    assert good.grounded and good.unsupported == () and good.reason() == ""
    assert m.check("A sci-fi classic from the 1970s.", allowed={"3"}).grounded
    assert m.check("A sci-fi classic from the 1980s.", allowed={"3"}).unsupported == ("1980s",)
    # Words inside a named title are not attributes: "2001" is a title here, not a year.
    assert m.stated("Like 2001, it is sci-fi.") == (["Sci-Fi"], [])
    assert m.check("Like 2001, it is sci-fi.", allowed={"7"}).grounded
    # With ``about``, attributes must be the subject's or a named allowed item's, not any history item's.
    assert m.check("A thriller for you.", allowed={"6", "1"}).grounded  # lenient: Heat is allowed
    assert m.check("A thriller for you.", allowed={"6", "1"}, about={"6"}).unsupported == ("thriller",)
    assert m.check("Like Heat, a thriller.", allowed={"6", "1"}, about={"6"}).grounded
    # Categories are matched as whole words, singular or plural.
    assert m.stated("Crime comedies and animations") == (["Crime", "Animation"], [])
