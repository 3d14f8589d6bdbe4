"""Arabic text handling in one place: normalization, sentence spans, search tokens.

The same functions serve indexing and querying, so a question and a passage are always reduced
the same way. Nothing here changes stored text: sentence spans are offsets into the original.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Harakat, tanwin, shadda, sukun, superscript alef, Quranic annotation marks.
_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed]")
_TATWEEL = "\u0640"
_CHAR_MAP = str.maketrans({
    "\u0622": "\u0627", "\u0623": "\u0627", "\u0625": "\u0627", "\u0671": "\u0627",  # آ أ إ ٱ → ا
    "\u0649": "\u064a",  # ى → ي
    "\u0629": "\u0647",  # ة → ه
    **{chr(0x0660 + d): str(d) for d in range(10)},  # Arabic-Indic digits
    **{chr(0x06F0 + d): str(d) for d in range(10)},  # Persian digits
    "\u06cc": "\u064a", "\u06a9": "\u0643",  # Persian yeh and kaf
    _TATWEEL: None,
})
_PRESENTATION_FORMS = re.compile("[\ufb50-\ufdff\ufe70-\ufeff]+")
_WORD = re.compile(r"\w+")

# Question words, pronouns, particles and prepositions, written as they are after `normalize`.
_STOPWORDS_RAW = """
ما ماذا من متى كم هل اين أين لماذا لم لما كيف اي أي ايها ايه أية اية أيه ايضا أيضا
في على الى إلى عن مع من منذ حتى عند عندما لدى بين بعد قبل خلال ضد نحو حول دون عبر تحت فوق
و او أو ثم بل لكن لكنه ان إن أن انه إنه أنه انها إنها أنها كان كانت يكون تكون كانوا
هو هي هم هن هما انا أنا نحن انت أنت انتم أنتم هذا هذه ذلك تلك هؤلاء اولئك أولئك هناك هنا
الذي التي الذين اللذين اللتين اللاتي اللواتي ما لا لن لم ليس ليست قد لقد سوف كل بعض غير
به بها بهم له لها لهم فيه فيها فيهم عليه عليها عليهم منه منها منهم عنه عنها عنهم اليه إليه
اليها إليها كما اذا إذا ذا ذو ذات تم وقد وكان وكانت وهو وهي وفي ومن وعلى والى وإلى وان وأن
فى يا ايضا أيضا الا إلا الي ولا
the a an of to in on at for by with from about is are was were be been what which who whom
whose when where why how did does do and or not that this these those it its as
"""


def normalize(text: str) -> str:
    """Search normalization: presentation forms unfolded, diacritics and tatweel removed, alef
    forms unified, ى→ي, ة→ه, Arabic-Indic and Persian digits → ASCII, Latin lower-cased."""
    text = _PRESENTATION_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _DIACRITICS.sub("", text)
    return text.translate(_CHAR_MAP).casefold()


def strip_diacritics(text: str) -> str:
    """Diacritics and tatweel removed; letters (ة, ى, hamza forms) kept as written."""
    return _DIACRITICS.sub("", text).replace(_TATWEEL, "")


def fold(text: str) -> tuple[str, list[int]]:
    """`normalize` for matching quotes, one character at a time, keeping where each folded
    character came from: positions[i] is the index in `text` of folded[i]. Whitespace runs
    become one space; diacritics, tatweel and invisible marks disappear."""
    out: list[str] = []
    positions: list[int] = []
    for index, char in enumerate(text):
        if _DIACRITICS.match(char) or char in "\u0640\u200b\u200c\u200d\u200e\u200f\u061c":
            continue
        if char.isspace():
            if out and out[-1] == " ":
                continue
            char = " "
        else:
            char = char.translate(_CHAR_MAP).lower()
            if len(char) != 1:
                char = char[:1] or " "
        out.append(char)
        positions.append(index)
    return "".join(out), positions


def find_folded(haystack: str, needle: str, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """[start, end) of `needle` in `haystack[start:end]`, comparing folded forms."""
    end = len(haystack) if end is None else end
    folded_hay, positions = fold(haystack[start:end])
    folded_needle = fold(needle)[0].strip()
    if not folded_needle:
        return None
    at = folded_hay.find(folded_needle)
    if at < 0:
        return None
    last = start + positions[at + len(folded_needle) - 1] + 1
    while last < end and _DIACRITICS.match(haystack[last]):  # keep the last letter's marks
        last += 1
    return start + positions[at], last


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    return frozenset(normalize(w) for w in _STOPWORDS_RAW.split())


_QUESTION_WORDS_RAW = "ما ماذا من متى أين كيف كم لماذا هل أي لمن ممن عم"
_QUESTION_PREFIXES = ("", "و", "ف", "ب", "ل", "وب", "فب", "ول", "فل")


@lru_cache(maxsize=1)
def _question_words() -> frozenset[str]:
    return frozenset(normalize(w) for w in _QUESTION_WORDS_RAW.split())


def is_question_word(word: str) -> bool:
    """"ما", "وماذا", "فلماذا", "بماذا": a question word, bare or with و/ف and ب/ل before it."""
    folded = normalize(word)
    return any(folded.startswith(p) and folded[len(p):] in _question_words() for p in _QUESTION_PREFIXES)


def words(text: str) -> list[str]:
    """Normalized word tokens; punctuation (Arabic and Latin) separates words."""
    return [w for w in _WORD.findall(normalize(text)) if w != "_"]


def has_arabic(text: str) -> bool:
    return any("\u0600" <= ch <= "\u06ff" or "\u0750" <= ch <= "\u077f" for ch in text)


# ----------------------------------------------------------------------------- stemming

_LIGHT_PREFIXES = ("وال", "بال", "كال", "فال", "لل", "ال")
_LIGHT_SUFFIXES = ("ها", "ان", "ات", "ون", "ين", "يه", "ه", "ي")  # ية and ة after normalize


def light_stem(word: str) -> str:
    """Light10-style stemming (Larkey et al.) on a normalized word: one conjunction و, one
    article prefix, then common suffixes, never leaving fewer than two letters."""
    if len(word) > 3 and word.startswith("و"):
        word = word[1:]
    for prefix in _LIGHT_PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 2:
            word = word[len(prefix):]
            break
    for suffix in _LIGHT_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            word = word[: -len(suffix)]
    return word


@lru_cache(maxsize=1)
def _snowball():
    import Stemmer

    return Stemmer.Stemmer("arabic")


def search_tokens(text: str, stemmer: str = "light") -> list[str]:
    """Tokens for the lexical index: normalized words minus stopwords, stemmed.

    stemmer: "light" (prefix/suffix stripping), "snowball" (PyStemmer's Arabic Snowball; Latin
    words go through it unchanged) or "none"."""
    out = []
    stop = stopwords()
    for word in words(text):
        if word in stop:
            continue
        if stemmer == "light":
            word = _light(word)
        elif stemmer == "snowball":
            word = _snowball().stemWord(word) if has_arabic(word) else word
        out.append(word)
    return out


LEXICAL_GRAM = 3
LEXICAL_VERSION = "trigram-light-1"  # part of the index fingerprint: change it when tokens change


def lexical_tokens(text: str) -> list[str]:
    """Terms for the BM25 index: character trigrams of each light-stemmed, non-stopword word,
    with word-boundary marks ("#" + word + "#").

    Trigrams match across the affixes and spelling variants that whole-word stems miss
    (للتواصل / التواصل / تواصلت), and measured best on XQuAD-ar and ARCD (docs/retrieval.md)."""
    out: list[str] = []
    for word in search_tokens(text, stemmer="light"):
        out.extend(_trigrams(word))
    return out


# Both cached: answering a question tokenizes the same passages' words over and over (a tenth of a
# question's time before).
@lru_cache(maxsize=1 << 16)
def _light(word: str) -> str:
    return light_stem(word) if has_arabic(word) else word


@lru_cache(maxsize=1 << 16)
def _trigrams(word: str) -> tuple[str, ...]:
    marked = f"#{word}#"
    if len(marked) <= LEXICAL_GRAM:
        return (marked,)
    return tuple(marked[i:i + LEXICAL_GRAM] for i in range(len(marked) - LEXICAL_GRAM + 1))


# ----------------------------------------------------------------------------- sentences

# A sentence ends after . ! ? ؟ ؛ … (and any closing quotes/brackets) when whitespace follows,
# or at a line break. A period after a lone Latin letter (an initial, "U.S.") does not end one.
_SENTENCE_END = re.compile(
    r"(?<![A-Za-z]\.[A-Za-z])(?<!\b[A-Za-z])[.!?؟؛…]+[\"'”’»)\]]*(?=\s)|\n")
_CLAUSE_END = re.compile(r"[،,:;][\"'”’»)\]]*(?=\s)")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """[start, end) spans of the sentences in text[start:end], whitespace trimmed."""
    return _split_after(_SENTENCE_END, text, start, len(text) if end is None else end)


def clause_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split one long sentence at ، , : ; (the comma stays with the clause before it)."""
    return _split_after(_CLAUSE_END, text, start, end)


def _split_after(boundary: re.Pattern, text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    cursor = start
    for match in boundary.finditer(text, start, end):
        spans.extend(_trimmed(text, cursor, match.end()))
        cursor = match.end()
    spans.extend(_trimmed(text, cursor, end))
    return spans


_NON_SPACE = re.compile(r"\S+")


def word_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _NON_SPACE.finditer(text, start, end)]


def _trimmed(text: str, start: int, end: int) -> list[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [(start, end)] if start < end else []
