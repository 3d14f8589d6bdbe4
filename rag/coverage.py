"""What does the question name that the retrieved passages never mention?

"Compare Germany's and Japan's fines" over articles that only speak of Germany is answered with
the German quotes and the note that the sources say nothing about Japan. Candidates are the
names a question puts side by side or adds on — conjuncts ("ماسك وبوتين", "Germany and Brazil"),
the words of a second question ("…، ومتى فتحت الهند تحقيقا مماثلا؟"), capitalized names in
English — and a candidate is reported only when every check fails to find it:

  - lexically in the passages' text (Arabic light stems, one letter of spelling tolerance for
    longer words);
  - for English names over Arabic text: the Arabic forms of places and bodies (rag/data/names.tsv),
    or a consonant skeleton that matches a transliteration ("Merkel" ~ "ميركل").
English names made of ordinary words ("Center for Countering Digital Hate", "World Cup") are
translated rather than transliterated, so they are never reported. Embedding similarity was
measured and dropped: a term's cosine to the passages' sentences does not separate mentioned from
unmentioned names (0.77–0.86 for both on the seeds). A wrong "the sources say nothing about X"
misleads, so every check leans towards "mentioned".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .arabic import has_arabic, is_question_word, light_stem, normalize, stopwords, strip_diacritics, words
from .retrieval import Evidence

NAMES_FILE = Path(__file__).resolve().parent / "data" / "names.tsv"

# Words of the request itself, never a subject: "compare", "summarize", "what is the position of" …
_TASK_WORDS_RAW = """
قارن قارني مقارنة مقارنه الفرق فرق بين لخص لخصي ملخص تلخيص اشرح وضح اذكر تحدث حدثني موقف مواقف رأي راي
قول قال قالت يقول تقول ذكر ذكرت دور أهم اهم أبرز ابرز حجج الحجج أسباب اسباب سبب نتائج تأثير تاثير
الأخرى الاخرى آخر اخر أخرى اخرى كل جميع مماثل مماثلا مماثلة مماثله نفس ذاته ايضا أيضا كذلك كثيرا
compare comparison difference between summarize summary explain describe say said says position view role
main arguments reasons effect impact other others also both each same similar
"""
_PARTICLES = {normalize(w) for w in "على في من عن إلى الى مع لدى عند حول بين".split()}
_QUESTION_OPENERS = {"what", "who", "whom", "when", "where", "why", "how", "which", "whose", "did", "does", "do",
                     "is", "are", "was", "were", "can", "could", "compare", "summarize", "tell", "list", "give",
                     "name", "explain", "describe", "i", "and", "or"}


@dataclass(frozen=True)
class Term:
    text: str  # as written in the question
    english: bool


@lru_cache(maxsize=1)
def _task_words() -> frozenset[str]:
    return frozenset(normalize(w) for w in _TASK_WORDS_RAW.split())


@lru_cache(maxsize=1)
def arabic_forms() -> dict[str, tuple[str, ...]]:
    """English name (lower case) → its Arabic forms, normalized."""
    forms = {}
    for line in NAMES_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            english, arabic = line.split("\t")
            forms[english.lower()] = tuple(normalize(f) for f in arabic.split("|"))
    return forms


def is_known_name(word: str) -> bool:
    """A name of the names table (country, organisation, platform): English in lower case, or a
    normalized Arabic form, with or without "ال"."""
    known = _known_names()
    return word in known or (word.startswith("ال") and word[2:] in known)


@lru_cache(maxsize=1)
def _known_names() -> frozenset[str]:
    forms = arabic_forms()
    return frozenset(forms) | frozenset(f for fs in forms.values() for f in fs)


# ----------------------------------------------------------------------------- candidates

def candidate_terms(question: str) -> list[Term]:
    """Names the question adds on or puts side by side, in question order."""
    if has_arabic(question):
        return _arabic_candidates(question)
    return _english_candidates(question)


def _arabic_candidates(question: str) -> list[Term]:
    written = re.findall(r"\w+", strip_diacritics(question))
    stop, task = stopwords(), _task_words()
    terms: list[Term] = []

    def content(word: str) -> bool:
        folded = normalize(word)
        return folded not in stop and folded not in task and not folded.isdigit() and len(folded) > 2

    # a conjunct: "وبوتين", "واليابان", "وجاستن ترودو" (a name may run on for a word)
    for i, word in enumerate(written):
        if i == 0 or not word.startswith("و") or len(word) < 4:
            continue
        rest = word[1:]
        if normalize(rest) in stop:  # "وعلى إنستغرام": the conjunct is what follows the particle
            if normalize(rest) in _PARTICLES and i + 1 < len(written) and content(written[i + 1]):
                terms.append(Term(written[i + 1], False))
            continue
        if content(rest) and content(written[i - 1]) and not is_question_word(written[i - 1]):
            phrase = [rest] + ([written[i + 1]] if i + 1 < len(written) and content(written[i + 1])
                               and not written[i + 1].startswith("و") else [])
            terms.append(Term(" ".join(phrase), False))
    # a second question: "…، ومتى فتحت الهند تحقيقا مماثلا؟" → its content words
    # (words the first question already had are its topic, not an addition)
    clauses = re.split(r"[،,؟?]\s*(?:و|ف)", strip_diacritics(question))
    first = {normalize(w) for w in re.findall(r"\w+", clauses[0])}
    for clause in clauses[1:]:
        for word in re.findall(r"\w+", clause):
            if content(word) and normalize(word) not in first and not any(word in t.text.split() for t in terms):
                terms.append(Term(word, False))
    return _unique(terms)


_CONNECTORS = {"for", "of", "the", "on", "de", "al"}
# Words that open an English sentence with a capital without naming anything ("Besides 1, what …",
# "… the EU? Under its new law …"): prepositions, conjunctions, adverbs.
_SENTENCE_OPENERS = set("""
besides beside under after before during since following according apart unlike despite although though
while if as for from with without between among about in on at by to into of over through regarding
concerning given other another then also so but yet now here there this that these those it its his her
their they he she we you my our your a an the some any all both each most many much such
""".split())
_TOKEN_OR_BREAK = re.compile(r"[A-Za-z][A-Za-z'.-]*|[,;:?!.()\[\]\"“”]")


def _english_candidates(question: str) -> list[Term]:
    """Runs of capitalized words ("Angela Merkel", "Center for Countering Digital Hate"), and
    the multi-word places and bodies of names.tsv."""
    pieces = _TOKEN_OR_BREAK.findall(question)
    terms: list[Term] = []
    run: list[str] = []

    def close() -> None:
        while run and run[-1].lower() in _CONNECTORS:
            run.pop()
        if run:
            terms.append(Term(" ".join(run), True))
        run.clear()

    opens_sentence = True
    for i, token in enumerate(pieces):
        if not token[:1].isalpha():  # a run of names stops at punctuation: "France, England and Italy"
            close()
            opens_sentence = opens_sentence or token in "?!."
            continue
        opener = opens_sentence and token.lower() in _QUESTION_OPENERS | _SENTENCE_OPENERS
        opens_sentence = False
        capital = token[:1].isupper() and not opener and token != "I"
        if capital or (run and token.lower() in _CONNECTORS and i + 1 < len(pieces)
                       and pieces[i + 1][:1].isupper()):
            run.append(token)
        else:
            close()
    close()
    lowered = question.lower()
    for name in arabic_forms():
        if " " in name and name in lowered and not any(name in t.text.lower() for t in terms):
            terms.append(Term(name, True))
    return _unique(terms)


def _unique(terms: list[Term]) -> list[Term]:
    seen, out = set(), []
    for term in terms:
        if term.text.lower() not in seen:
            seen.add(term.text.lower())
            out.append(term)
    return out


# ----------------------------------------------------------------------------- checks

def uncovered_terms(question: str, evidence: Sequence[Evidence]) -> list[str]:
    """The candidate terms of `question` that none of the passages mentions."""
    candidates = candidate_terms(question)
    missing = missing_terms(candidates, evidence)
    if len(missing) == len(candidates) and len(candidates) > 1:
        return []  # none of the question's names is in the passages: a retrieval miss, not a gap
    return [t.text for t in missing]


def missing_terms(terms: Sequence[Term], evidence: Sequence[Evidence]) -> list[Term]:
    """The terms that no passage mentions."""
    if not terms or not evidence:
        return list(terms)
    vocabulary = _vocabulary([item.passage.title + "\n" + item.passage.text for item in evidence])
    return [t for t in terms if not _mentioned(t, vocabulary)]


def term(text: str) -> Term:
    return Term(text, not has_arabic(text))


def mentions(text: str, name: str) -> bool:
    """Whether `text` (one sentence) names `name`, by the same checks as `missing_terms`."""
    return _mentioned(term(name), _vocabulary([text]))


@dataclass(frozen=True)
class _Vocabulary:
    stems: frozenset[str]
    skeletons: frozenset[str]
    folded: str


def _vocabulary(texts: Sequence[str]) -> _Vocabulary:
    tokens = [w for text in texts for w in words(text)]
    stems = {light_stem(w) for w in tokens}
    skeletons = {skeleton(w) for w in tokens if has_arabic(w)}
    skeletons |= {skeleton(a + b) for text in texts for a, b in _pairs(words(text)) if has_arabic(a)}
    return _Vocabulary(frozenset(stems), frozenset(s for s in skeletons if s),
                       " ".join(normalize(t) for t in texts))


def _pairs(tokens: list[str]) -> list[tuple[str, str]]:
    return list(zip(tokens, tokens[1:]))


def _mentioned(candidate: Term, vocabulary: _Vocabulary) -> bool:
    if candidate.english:
        return _english_mentioned(candidate.text, vocabulary)
    content = [w for w in words(candidate.text) if w not in stopwords() and w not in _task_words()]
    return not content or all(_arabic_word_mentioned(w, vocabulary) for w in content) or any(
        _arabic_word_mentioned(w, vocabulary) and len(w) > 3 for w in content[-1:])


def _arabic_word_mentioned(word: str, vocabulary: _Vocabulary) -> bool:
    """The word's light stem is in the passages, or for a longer word one within a letter of it
    (spelling variants of names: "ارديرن"/"أرديرن" fold alike, "تشيرش"/"تشيرف" differ by one)."""
    stem = light_stem(word)
    if stem in vocabulary.stems:
        return True
    return len(stem) >= 5 and any(s[:1] == stem[:1] and abs(len(s) - len(stem)) <= 1 and _within_one(stem, s)
                                  for s in vocabulary.stems)


def _english_mentioned(name: str, vocabulary: _Vocabulary) -> bool:
    lowered = name.lower()
    if normalize(name) in vocabulary.folded:
        return True
    forms = arabic_forms().get(lowered) or arabic_forms().get(re.sub(r"'s$|s$", "", lowered)) or _demonym_forms(lowered)
    if forms:
        return any(f in vocabulary.folded for f in forms)
    parts = [re.sub(r"'s$", "", p) for p in re.findall(r"[A-Za-z']+", name)]
    if all(p.lower() in _ORDINARY_WORDS or len(p) <= 2 for p in parts):
        return True  # a descriptive name, translated in Arabic text: it cannot be checked by sound
    if any(sum(c.isupper() for c in p) > 1 for p in parts):
        return True  # an acronym ("BSkyB" is "بي سكاي بي"): spelled out by letter, not checkable by sound
    names = [p for p in parts if p.lower() not in _ORDINARY_WORDS and len(p) > 2]
    joined = skeleton("".join(names))
    last = {skeleton(names[-1]), skeleton(re.sub(r"s$", "", names[-1]))}  # "Seamans" is written "سيمان"
    return any(_skeleton_match(key, vocabulary.skeletons) for key in last) or (
        len(names) > 1 and _skeleton_match(joined, vocabulary.skeletons))


_DEMONYM_ENDINGS = (("ese", ""), ("ian", "ia"), ("ian", "a"), ("ian", ""), ("ian", "y"), ("an", "a"), ("an", "o"),
                    ("an", ""), ("i", ""), ("ish", ""), ("ish", "ey"), ("ic", "ia"))


def _demonym_forms(word: str) -> tuple[str, ...] | None:
    """The places table's forms for a people or language not in it ("Senegalese" → Senegal,
    "Tunisian" → Tunisia, "Kuwaiti" → Kuwait)."""
    if " " in word:
        return None
    for ending, replacement in _DEMONYM_ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            forms = arabic_forms().get(word[: -len(ending)] + replacement)
            if forms:
                return forms
    return None


def _skeleton_match(key: str, skeletons: frozenset[str]) -> bool:
    """Exact for short skeletons; one consonant of tolerance from six consonants on."""
    if len(key) < 2:
        return True  # too short to tell: assume mentioned
    if key in skeletons:
        return True
    return len(key) >= 6 and any(abs(len(s) - len(key)) <= 1 and _within_one(key, s) for s in skeletons)


# Ordinary English words of names that Arabic translates rather than transliterates.
_ORDINARY_WORDS = set("""
center centre council committee digital hate hatred countering counter institute foundation union european
national international government ministry department party office court agency commission parliament
association organization organisation society network networks initiative call fund bank university school
group company corporation news times post daily mail press online civil courage safety act law bill security
service services world cup state states united kingdom republic north south east west new city prime minister
president secretary king queen prince sir dr mr mrs ms chief executive officer director general house white
street square palace summit conference forum alliance coalition movement front league federation board
public media social platform platforms internet web day week month year the of for and
""".split())


def _within_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


# Consonant classes shared by English spellings and Arabic script, lenient on purpose (a false
# match only means no note; a false mismatch would wrongly claim the sources are silent).
_EN_DIGRAPHS = [("sch", "S"), ("tch", "C"), ("sh", "C"), ("ch", "C"), ("th", "T"), ("ph", "F"), ("gh", "K"),
                ("kh", "K"), ("ck", "K"), ("qu", "K"), ("x", "KS")]
_EN_LETTERS = {"b": "B", "p": "B", "t": "T", "d": "T", "s": "S", "z": "S", "c": "K", "k": "K", "g": "K", "j": "K",
               "q": "K", "f": "F", "v": "F", "l": "L", "m": "M", "n": "N", "r": "R", "h": ""}
_AR_LETTERS = {"ب": "B", "پ": "B", "ت": "T", "ط": "T", "د": "T", "ض": "T", "ث": "S", "س": "S", "ص": "S", "ز": "S",
               "ذ": "S", "ظ": "S", "ش": "C", "ج": "K", "ك": "K", "ق": "K", "غ": "K", "خ": "K", "گ": "K", "ف": "F",
               "ڤ": "F", "ل": "L", "م": "M", "ن": "N", "ر": "R"}


def skeleton(word: str) -> str:
    """The consonants of a name in shared classes, vowels and h dropped, doubles collapsed."""
    if has_arabic(word):
        folded = normalize(word)
        if folded.startswith("ال") and len(folded) > 4:
            folded = folded[2:]
        folded = folded.replace("تش", "ش")
        out = "".join(_AR_LETTERS.get(ch, "") for ch in folded)
    else:
        lowered = re.sub(r"c(?=[eiy])", "s", re.sub(r"ch(?=[rl])", "k", word.lower()))
        parts, i = [], 0
        while i < len(lowered):
            digraph = next(((d, c) for d, c in _EN_DIGRAPHS if lowered.startswith(d, i)), None)
            if digraph:
                parts.append(digraph[1])
                i += len(digraph[0])
            else:
                parts.append(_EN_LETTERS.get(lowered[i], ""))
                i += 1
        out = "".join(parts)
    return re.sub(r"(.)\1+", r"\1", out)
