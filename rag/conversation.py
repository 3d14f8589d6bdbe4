"""Does this turn depend on the conversation? If so, what should be retrieved for it?

A question is first taken on its own. It depends on the earlier turns only when it says so —
ellipsis ("ومتى؟", "and who founded it?"), a pronoun or demonstrative with nothing to refer to
("ما منصبها؟", "where was he …"), "what about …" — or when it is too short to stand alone and
finds no evidence on its own. A standalone question on a new topic is answered exactly as in a
fresh chat. A dependent one is resolved against the previous turn: its question supplies the
topic and the articles it cited are preferred, unless the follow-up names something new
("وماذا عن ألمانيا؟"), which then leads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .arabic import is_question_word, normalize, search_tokens, stopwords, strip_diacritics, words

# Turn openings that only make sense after an earlier turn, after `arabic.normalize`.
_AR_OPENINGS = re.compile(
    r"^(?:و|ف)(?:ماذا|ما|من|متي|اين|كيف|كم|لماذا|هل|اي|باي|بماذا|لمن|عن|الي|منذ)\b"
    r"|^(?:و|ف)?ماذا عن\b|^(?:و|ف)?ما رايك\b|^(?:و|ف)?ماذا بعد\b|^(?:و|ف)?كذلك\b|^(?:و|ف)?ايضا\b")
_EN_OPENINGS = re.compile(r"^(?:and|but|also|so|then)\b|^(?:what|how) about\b|^what else\b|^anything else\b", re.I)
_AR_PRONOUNS = {normalize(w) for w in "هو هي هم هما هن".split()}
_AR_REFERENCES = _AR_PRONOUNS | {normalize(w) for w in
                                 "ذلك تلك هذا هذه هؤلاء اولئك ذاك عندئذ حينها حينئذ بعدها قبلها".split()}
# An attached pronoun (-ه, -ها, -هم) on the last words of a short question: "ومن أسسه؟", "ما منصبها؟"
# (tested on the text as written, where ة is not ه)
_AR_SUFFIX = re.compile(r"[^\W\d_](?:ه|ها|هم|هما)$")
_EN_PRONOUNS = {"he", "she", "it", "they", "him", "her", "them", "his", "its", "their", "hers", "theirs"}
_EN_DEMONSTRATIVES = {"that", "this", "these", "those", "there", "then"}
SHORT_QUESTION_WORDS = 4  # content words; shorter questions may lean on the conversation


@dataclass(frozen=True)
class Turn:
    """An earlier turn: the user's question, the answer's text and the articles it cited."""

    question: str
    answer: str
    doc_ids: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """How to retrieve for the current question."""

    depends: bool
    query: str  # what retrieval embeds and matches (the question itself when standalone)
    reader_query: str  # what the answer stage reads the passages with
    prefer_docs: tuple[str, ...] = ()  # articles of the previous turn to favour
    reason: str = "standalone"
    subject: str = ""  # what the turn names anew ("ألمانيا" in "وماذا عن ألمانيا؟"): its passages must mention it


def previous_turn(history: Sequence[Any] | None) -> Turn | None:
    """The last complete turn of a history of {"role", "content", ["doc_ids"]} dicts (the
    chat's form) or of `Answer` objects."""
    if not history:
        return None
    last = history[-1]
    if hasattr(last, "citations"):  # an Answer
        return Turn(last.question, last.answer, tuple(dict.fromkeys(c.doc_id for c in last.citations)))
    question = next((m.get("content", "") for m in reversed(history) if m.get("role") == "user"), "")
    answer = next((m for m in reversed(history) if m.get("role") == "assistant"), {})
    if not question:
        return None
    return Turn(str(question), str(answer.get("content", "")), tuple(answer.get("doc_ids") or ()))


def cues(question: str) -> list[str]:
    """Why the question reads as a follow-up (empty when it reads as standalone)."""
    found = []
    folded = normalize(question).strip(" ?؟.!").strip()
    tokens = words(question)
    short = len(content_words(question)) <= SHORT_QUESTION_WORDS
    if _AR_OPENINGS.search(folded) or _EN_OPENINGS.search(folded):
        found.append("opening")
    # "ما هي …" / "من هو …" is a copula, not a reference to an earlier turn
    references = [t for i, t in enumerate(tokens) if t in _AR_REFERENCES
                  and not (t in _AR_PRONOUNS and i > 0 and is_question_word(tokens[i - 1]))]
    if references or any(t in _EN_PRONOUNS or (short and t in _EN_DEMONSTRATIVES) for t in tokens):
        found.append("reference")
    written = re.findall(r"\w+", strip_diacritics(question))
    if short and any(_AR_SUFFIX.search(w) and len(w) > 3 for w in written[-2:]):
        found.append("attached pronoun")
    return found


_OWN_QUESTION = re.compile(
    r"^(?:و|ف)?(?:ماذا|ما|من|متي|اين|كيف|كم|بكم|لماذا|هل|اي|باي|بماذا|لمن|منذ متي)\b(?! عن\b)"
    r"|^(?:(?:and|but|so|then)\s+)?(?:who|whom|whose|what|when|where|which|why|how)\b(?! about\b)", re.I)


def asks_own_question(question: str) -> bool:
    """The turn has its own question word ("ومتى أُطلق؟", "and who founded it?"), not just
    "what about …" or a bare phrase ("وفي ألمانيا؟")."""
    return bool(_OWN_QUESTION.search(normalize(question).strip(" ?؟.!").strip()))


def content_words(question: str) -> list[str]:
    stop = stopwords() | _EN_PRONOUNS | _EN_DEMONSTRATIVES
    return [w for w in search_tokens(question, stemmer="none") if w not in stop]


def resolve(question: str, history: Sequence[Any] | None, weak_on_its_own: bool) -> Resolution:
    """Decide whether `question` depends on the conversation. `weak_on_its_own`: retrieval for
    the question alone found no passage above the refusal threshold."""
    previous = previous_turn(history)
    if previous is None:
        return Resolution(False, question, question)
    reasons = cues(question)
    short = len(content_words(question)) <= SHORT_QUESTION_WORDS
    if reasons and not short and not weak_on_its_own:
        return Resolution(False, question, question, reason="names its own topic")
    if not reasons and weak_on_its_own and short:
        reasons = ["too short to stand alone"]
    if not reasons:
        return Resolution(False, question, question)
    topic_words = content_words(previous.question)
    new_terms = set(content_words(question)) - set(topic_words)
    subject = _new_subject(new_terms, question)
    names_something_new = bool(subject)
    if names_something_new:  # "وماذا عن ألمانيا؟" after a question about Britain: Germany instead of it
        from .coverage import is_known_name

        topic_words = [w for w in topic_words if not is_known_name(w)]
    topic = " ".join(topic_words)
    query = f"{question}\n{topic}" if topic else question
    # A follow-up that asks its own question ("ومن أطلقها؟", "and when?") is read as asked: retrieval
    # already keeps to the topic, and topic words beside it lead the reader to sentences about the
    # topic rather than to the one that answers. "What about X?" borrows the earlier question.
    reader_query = question if asks_own_question(question) or not topic else f"{question} ({topic})"
    return Resolution(True, query, reader_query,
                      prefer_docs=() if names_something_new else previous.doc_ids,
                      reason=", ".join(reasons), subject=subject)


def _new_subject(terms: set[str], question: str) -> str:
    """What the follow-up names that the previous question did not: the words after "عن"/"about"
    ("وماذا عن بيتر كايل؟" → "بيتر كايل") or a run of new capitalized words (English); "" if none."""
    about = re.search(r"(?:^|\s)(?:عن|about)\s+([^?؟.!,،]+)", strip_diacritics(question), re.I)
    if about:
        named = re.sub(r"^(?:the|a)\s+", "", about.group(1).strip(), flags=re.I)
        if named and normalize(named.split()[0]).lower() in {normalize(t).lower() for t in terms}:
            return named
    new = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", question)[1:] if w[:1].isupper() and w.lower() in terms]
    return " ".join(new)
