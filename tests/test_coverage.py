"""What the question names that the passages never mention: candidates, transliteration
skeletons, and the real index (the uncovered term is reported, covered ones are not)."""

from __future__ import annotations

import pytest

from rag.coverage import candidate_terms, mentions, skeleton, uncovered_terms
from rag.retrieval import Retriever

from .conftest import dev_questions


@pytest.mark.parametrize(("english", "arabic"), [
    ("Merkel", "ميركل"), ("Instagram", "إنستغرام"), ("Brazil", "البرازيل"), ("Trudeau", "ترودو"),
    ("Robinson", "روبنسون"), ("Sandberg", "ساندبرغ"), ("Facebook", "فيسبوك"), ("Starmer", "ستارمر")])
def test_transliterations_share_a_skeleton(english, arabic):
    assert skeleton(english) == skeleton(arabic)


def test_different_names_do_not():
    assert skeleton("Rivian") != skeleton("تسلا") and skeleton("Putin") != skeleton("ماسك")


def test_a_sentence_mentions_a_name_in_either_language():
    sentence = "وفي أبريل الماضي، أقرت ألمانيا قانونا لتغريم شبكات التواصل الاجتماعي."
    assert mentions(sentence, "ألمانيا") and mentions(sentence, "Germany") and mentions(sentence, "موقف ألمانيا")
    assert not mentions(sentence, "اليابان") and not mentions(sentence, "Japan")
    assert mentions("وعقد ترامب اجتماعات فردية", "Trump") and not mentions("وعقد ترامب اجتماعات فردية", "Macron")


def test_candidates_are_the_names_put_side_by_side():
    assert [t.text for t in candidate_terms("ماذا قال ماسك وبوتين عن أعمال الشغب في بريطانيا؟")] == ["بوتين"]
    assert [t.text for t in candidate_terms("قارن بين الغرامات في ألمانيا واليابان")] == ["اليابان"]
    assert "الهند" in [t.text for t in candidate_terms("متى فتحت بروكسل تحقيقا ضد إكس، ومتى فتحت الهند تحقيقا؟")]
    english = [t.text for t in candidate_terms("What did Macron and Angela Merkel say about hate speech?")]
    assert english == ["Macron", "Angela Merkel"]
    # an organisation's name is one candidate, not its separate capitalized words
    assert "Center for Countering Digital Hate" in [
        t.text for t in candidate_terms("Which newspaper reported on the Center for Countering Digital Hate?")]
    assert candidate_terms("من هو نائب رئيس شؤون النزاهة في فيسبوك؟") == []


def test_sentence_openers_and_punctuation_do_not_make_names():
    # "… the EU? Under its new law …": a new sentence's first word, not a name joined to "EU"
    assert [t.text for t in candidate_terms(
        "What about the EU? Under its new digital services law, how quickly must platforms act?")] == ["EU"]
    assert [t.text for t in candidate_terms("Besides 1, what is the only divisor a prime can have?")] == []
    # a list is three names, not one run across the commas
    assert [t.text for t in candidate_terms("When did the writings spread to France, England and Italy?")] == [
        "France", "England", "Italy"]
    # "وبماذا وصفت": the و of "وصفت" is the verb's own, not "and" after a question word
    assert candidate_terms("وبماذا وصفت ما وضعته هذه الوسائل تحت المجموعات اليمينية؟") == []


@pytest.mark.parametrize(("sentence", "name"), [
    ("ورئيس السنغال ماكي سال", "Senegalese"),  # a people: its country's forms
    ("أقرت تونس قانونا", "Tunisian"),
    ("كما تعرف أيضاً بالإنقليزية بــAmazonia", "English"),  # a spelling of the table's variants
    ("إن إنشاء سيمان للجنة مخصصة", "Seamans"),  # the final s dropped in the transliteration
    ("تعتمد بي سكاي بي تقنية البث", "BSkyB's"),  # an acronym, spelled by letter: not checkable by sound
])
def test_names_written_another_way_are_found(sentence, name):
    assert mentions(sentence, name)


def test_a_people_of_another_country_is_not_found():
    assert not mentions("ورئيس السنغال ماكي سال", "Tunisian")
    assert not mentions("ورئيس السنغال ماكي سال", "Kenyans")


def _uncovered(index, question):
    retrieval = Retriever(index.store, index.embedder).retrieve(question, k=5)
    return uncovered_terms(question, retrieval.evidence)


@pytest.mark.parametrize(("question", "missing"), [
    ("ماذا قال ماسك وبوتين عن أعمال الشغب في بريطانيا؟", "بوتين"),
    ("قارن بين الغرامات التي تفرضها ألمانيا واليابان على شبكات التواصل الاجتماعي", "اليابان"),
    ("What did Macron and Angela Merkel say about the Christchurch Call?", "Angela Merkel"),
    ("How many followers does Musk have on X and on Instagram?", "Instagram"),
])
def test_uncovered_terms_are_reported(seed_index, question, missing):
    assert _uncovered(seed_index, question) == [missing]


def test_no_false_alarm_on_the_answerable_dev_questions(seed_index):
    for row in dev_questions():
        if row["answerable"]:
            assert _uncovered(seed_index, row["question"]) == [], row["question"]


def test_the_answer_says_what_is_not_covered(seed_index):
    answer = seed_index.ask("ماذا قال ماسك وبوتين عن أعمال الشغب في بريطانيا؟")
    assert answer.uncovered == ("بوتين",) and not answer.refused
    assert answer.answer.rstrip().endswith("لا تذكر المقالات شيئًا عن: بوتين.")
    assert answer.citations  # the covered part is still answered
    english = seed_index.ask("How many followers does Musk have on X and on Instagram?")
    assert "The articles say nothing about: Instagram." in english.answer
    assert any("193" in c.quote for c in english.citations)
