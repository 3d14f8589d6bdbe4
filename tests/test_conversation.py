"""Turns that know whether they depend on the conversation: cues, resolution, and the real
index (a topic switch gets exactly the passages of a fresh chat; a follow-up finds its article)."""

from __future__ import annotations

import pytest

from rag.conversation import asks_own_question, cues, previous_turn, resolve
from rag.evaluation import history_of

FOLLOW_UPS = ["ومن أطلقها؟", "وكم شخصا قتل فيها؟", "And who founded it?", "Where was he on holiday?",
              "وماذا عن ألمانيا؟", "وأين قال ذلك؟", "وما منصبه؟", "What about France?"]
STANDALONE = ["ما هي عاصمة كندا؟", "ما هي مبادرة نداء كرايست تشيرش؟", "Who launched the Christchurch Call?",
              "متى فتحت بروكسل تحقيقا رسميا ضد منصة إكس؟", "What is the population of Egypt?",
              "كم شخصا قتل في هجوم المسجدين في نيوزيلندا؟"]


@pytest.mark.parametrize("question", FOLLOW_UPS)
def test_follow_up_cues(question):
    assert cues(question), question


@pytest.mark.parametrize("question", STANDALONE)
def test_standalone_questions_have_no_cue(question):
    assert cues(question) == [], question


HISTORY = [{"role": "user", "content": "ما هي مبادرة نداء كرايست تشيرش؟"},
           {"role": "assistant", "content": "…", "doc_ids": ["001.txt"]}]


def test_resolution_uses_the_previous_question_and_its_articles():
    turn = resolve("ومن أطلقها؟", HISTORY, weak_on_its_own=True)
    assert turn.depends and "كرايست" in turn.query and turn.prefer_docs == ("001.txt",)
    # a follow-up that names something new leads with it, without favouring the old article
    shifted = resolve("وماذا عن ألمانيا؟", HISTORY, weak_on_its_own=False)
    assert shifted.depends and shifted.prefer_docs == ()


def test_a_follow_up_with_its_own_question_word_is_read_as_asked():
    """The reader reads "ومن أطلقها؟" as asked (retrieval keeps to the topic); "what about X"
    has no question of its own and borrows the earlier one."""
    assert [asks_own_question(q) for q in ["ومن أطلقها؟", "And who founded it?", "ومتى؟", "وماذا عن ألمانيا؟",
                                           "What about France?", "وفي ألمانيا؟"]] == [True, True, True,
                                                                                    False, False, False]
    assert resolve("ومن أطلقها؟", HISTORY, weak_on_its_own=True).reader_query == "ومن أطلقها؟"
    borrowed = resolve("وماذا عن ألمانيا؟", HISTORY, weak_on_its_own=False).reader_query
    assert borrowed.startswith("وماذا عن ألمانيا؟ (") and "كرايست" in borrowed


def test_what_about_another_country_swaps_the_country_of_the_previous_question():
    history = [{"role": "user", "content": "ما الغرامات التي يفرضها قانون السلامة على الإنترنت في بريطانيا؟"},
               {"role": "assistant", "content": "…", "doc_ids": ["000.txt"]}]
    turn = resolve("وماذا عن ألمانيا؟", history, weak_on_its_own=False)
    assert "بريطانيا" not in turn.query and "الغرامات" in turn.query and "ألمانيا" in turn.query
    english = [{"role": "user", "content": "What fines does the Online Safety Act impose in Britain?"}]
    turn = resolve("What about Germany?", english, weak_on_its_own=False)
    assert "britain" not in turn.query.lower() and "online safety act" in turn.query.lower()


def test_what_about_names_the_new_subject():
    history = [{"role": "user", "content": "ما منصب تييري بريتون؟"},
               {"role": "assistant", "content": "…", "doc_ids": ["003.txt"]}]
    assert resolve("وماذا عن بيتر كايل؟", history, weak_on_its_own=False).subject == "بيتر كايل"
    assert resolve("And what about the EU?", history, weak_on_its_own=False).subject == "EU"
    assert resolve("ومتى؟", history, weak_on_its_own=False).subject == ""
    assert resolve("وماذا عن ذلك؟", history, weak_on_its_own=False).subject == ""


def test_a_long_question_with_its_own_evidence_stands_alone():
    question = "وما الصحيفة التي كشفت تفاصيل المواجهة بين ماسك ومركز مكافحة الكراهية الرقمية؟"
    assert not resolve(question, HISTORY, weak_on_its_own=False).depends
    assert not resolve("Who launched the Christchurch Call?", HISTORY, weak_on_its_own=False).depends
    assert not resolve("ومن أطلقها؟", None, weak_on_its_own=True).depends  # no history: nothing to lean on


def test_short_question_without_evidence_leans_on_history():
    assert resolve("الغرامة؟", HISTORY, weak_on_its_own=True).depends
    assert not resolve("الغرامة؟", HISTORY, weak_on_its_own=False).depends


def test_previous_turn_accepts_answers_and_chat_dicts(seed_index):
    answer = seed_index.ask("ما هي مبادرة نداء كرايست تشيرش؟")
    from_answer = previous_turn([answer])
    from_dicts = previous_turn(history_of(answer))
    assert from_answer == from_dicts
    assert from_answer.doc_ids and from_answer.doc_ids[0] == "001_4cc70f0e583a2e76.txt"


def test_topic_switch_gets_the_passages_of_a_fresh_chat(seed_index):
    first = seed_index.ask("ما الغرامة التي أقرتها ألمانيا على شبكات التواصل الاجتماعي؟")
    switched = seed_index.ask("Who launched the Christchurch Call?", history=history_of(first))
    fresh = seed_index.ask("Who launched the Christchurch Call?")
    assert [p.chunk_id for p in switched.passages] == [p.chunk_id for p in fresh.passages]
    assert switched.standalone_question is None
    assert switched.citations[0].doc_id == "001_4cc70f0e583a2e76.txt"


def test_follow_up_is_answered_from_the_previous_topic(seed_index):
    first = seed_index.ask("متى وقعت مجزرة المسجدين في نيوزيلندا؟")
    follow = seed_index.ask("وكم شخصا قتل فيها؟", history=history_of(first))
    assert follow.standalone_question and "نيوزيلندا" in follow.standalone_question
    assert follow.citations[0].doc_id == "001_4cc70f0e583a2e76.txt"
    assert any("51" in c.quote for c in follow.citations)


def test_what_about_someone_new_is_answered_from_the_passages_that_name_them(seed_index):
    # the earlier question's name pulls in its own article; beside it, the one naming Peter Kyle
    # scored below the refusal threshold and the turn was refused
    first = seed_index.ask("ما منصب تييري بريتون؟")
    follow = seed_index.ask("وماذا عن بيتر كايل؟", history=history_of(first))
    assert not follow.refused
    assert follow.citations and "وزير التكنولوجيا بيتر كايل" in follow.citations[0].quote


def test_what_about_another_country_quotes_that_country(seed_index):
    first = seed_index.ask("ما الغرامات التي يفرضها قانون السلامة على الإنترنت في بريطانيا؟")
    follow = seed_index.ask("وماذا عن ألمانيا؟", history=history_of(first))
    assert all("ألمانيا" in p.text for p in follow.passages)
    assert any("50 مليون يورو" in c.quote for c in follow.citations)
