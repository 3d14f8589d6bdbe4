"""`rag eval`: retrieval and answer quality on a question set, with the production code path.

Datasets:
  - SQuAD-format JSON (XQuAD, ARCD): articles → paragraphs → qas. Every unique paragraph of the
    dataset and of the `--corpus` files becomes one document (title = article title) in an index
    built for the evaluation; a question's gold document is the paragraph it was asked on.
  - JSONL questions (tests/data/eval/seeds_qa_dev.jsonl): question, lang, doc (one id, a list
    of acceptable ids, or null when unanswerable), answer (one string or a list), and optionally
    uncovered (terms the articles never mention) and docs (the articles a summary or comparison
    should quote). `--corpus` names the document folders whose ids `doc` refers to — or SQuAD
    files, whose qas a row names by `id` (its gold paragraph and answers then come from there;
    tests/data/eval/xquad_en_questions.jsonl holds English questions of XQuAD this way).
  - JSONL conversations: rows with `turns` (earlier questions, then the scored last one with its
    doc and answer) and `kind` (follow-up or switch). The turns are asked in order, each with the
    previous ones as history, like the chat does.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Index
from .arabic import find_folded, has_arabic, normalize
from .config import Settings
from .errors import ConfigError
from .types import Answer

STRIP = " \t\n-–—\u200f\u200e"


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    gold_docs: tuple[str, ...]  # empty: the corpus does not answer it
    answers: tuple[str, ...]
    lang: str
    uncovered: tuple[str, ...] = ()
    expected_docs: tuple[str, ...] = ()  # a summary/comparison should quote each of these
    history: tuple[str, ...] = ()  # earlier questions of the conversation, asked first
    kind: str | None = None  # conversations: follow-up or switch
    group: str | None = None  # SQuAD: the article the paragraph comes from (folds split by it)

    @property
    def answerable(self) -> bool:
        return bool(self.gold_docs)

    @property
    def gold_doc(self) -> str | None:
        return self.gold_docs[0] if self.gold_docs else None


@dataclass(frozen=True)
class Dataset:
    name: str
    questions: list[Question]
    documents: list[dict[str, str]] | None  # SQuAD paragraphs as records; None: corpus folders
    corpus_paths: list[Path]
    conversations: bool = False


def _lang(text: str, given: str | None = None) -> str:
    return given or ("ar" if has_arabic(text) else "en")


def _strings(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def load_dataset(path: Path, corpus: Sequence[Path] = ()) -> Dataset:
    if not path.is_file():
        raise ConfigError(f"evaluation set {path} does not exist")
    if path.suffix.lower() == ".jsonl":
        return _load_jsonl(path, corpus)
    return _load_squad(path, corpus)


def _load_jsonl(path: Path, corpus: Sequence[Path]) -> Dataset:
    if not corpus:
        raise ConfigError(f"{path} is a question list: name the documents it asks about with "
                          "--corpus FOLDER (e.g. --corpus seeds)")
    squad_files = [p for p in corpus if p.is_file() and p.suffix.lower() == ".json"]
    squad = _squad_corpus(squad_files) if squad_files else None
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            turns = row.get("turns") or [row]
            last = turns[-1]
            text = last["question"].strip(STRIP)
            history = tuple(t["question"].strip(STRIP) for t in turns[:-1])
        except (ValueError, KeyError, AttributeError, TypeError):
            raise ConfigError(f"{path}:{number} is not a question record with a `question` field "
                              "(or a conversation with `turns`)") from None
        qid = str(row.get("id", number))
        gold, answers = _strings(last.get("doc")), _strings(last.get("answer"))
        if squad is not None:
            if qid not in squad.gold:
                files = ", ".join(map(str, squad_files))
                raise ConfigError(f"{path}:{number}: id {qid!r} is not a question of {files}")
            gold, answers = (squad.gold[qid],), answers or squad.answers[qid]
            row.setdefault("group", squad.titles[qid])
        if not last.get("answerable", bool(gold)):
            gold = ()
        questions.append(Question(
            qid=qid, question=text, gold_docs=gold, answers=answers,
            lang=_lang(text, last.get("lang", row.get("lang"))),
            uncovered=_strings(last.get("uncovered")), expected_docs=_strings(last.get("docs")),
            history=history, kind=row.get("kind"), group=row.get("group")))
    conversations = any(q.history for q in questions)
    if squad is not None:
        return Dataset(path.name, questions, squad.documents, [], conversations)
    return Dataset(path.name, questions, None, list(corpus), conversations)


def _squad_paragraphs(path: Path) -> list[tuple[str, str, list[dict]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [(article.get("title", path.stem), paragraph["context"], paragraph.get("qas", []))
                for article in data["data"] for paragraph in article["paragraphs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not SQuAD-format JSON (data → paragraphs → context/qas): {exc}") from None


@dataclass
class _SquadCorpus:
    documents: list[dict[str, str]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # paragraph text → doc id
    gold: dict[str, str] = field(default_factory=dict)  # question id → doc id
    answers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)  # question id → article title

    def add(self, title: str, context: str, qas: list[dict]) -> str:
        key = context.strip()
        if key not in self.ids:
            self.ids[key] = f"p{len(self.ids) + 1:05d}"
            self.documents.append({"id": self.ids[key], "title": title.replace("_", " "), "text": context})
        doc_id = self.ids[key]
        for qa in qas:
            self.gold[str(qa.get("id"))] = doc_id
            self.answers[str(qa.get("id"))] = tuple(a["text"] for a in qa.get("answers", []))
            self.titles[str(qa.get("id"))] = title
        return doc_id


def _squad_corpus(paths: Sequence[Path]) -> _SquadCorpus:
    corpus = _SquadCorpus()
    for path in paths:
        for title, context, qas in _squad_paragraphs(path):
            corpus.add(title, context, qas)
    return corpus


def _load_squad(path: Path, corpus: Sequence[Path]) -> Dataset:
    squad = _SquadCorpus()
    questions = []
    for title, context, qas in _squad_paragraphs(path):
        gold = squad.add(title, context, qas)
        for qa in qas:
            text = qa["question"].strip(STRIP)
            answers = tuple(a["text"] for a in qa.get("answers", []))
            questions.append(Question(qid=str(qa.get("id", len(questions))), question=text,
                                      gold_docs=(gold,), answers=answers, lang=_lang(text), group=title))
    for extra in corpus:
        for title, context, _ in _squad_paragraphs(extra):
            squad.add(title, context, [])
    return Dataset(path.name, questions, squad.documents, [])


def prepare_index(dataset: Dataset, settings: Settings, notify: Callable[[str], None]) -> Index:
    """An index over the dataset's documents. SQuAD paragraphs are written once as JSONL into a
    cache folder named by their hash, so repeated evaluations reuse the embeddings."""
    if dataset.documents is None:
        digest = hashlib.sha256("\n".join(str(p.resolve()) for p in dataset.corpus_paths).encode())
        paths = dataset.corpus_paths
    else:
        payload = json.dumps(dataset.documents, ensure_ascii=False, sort_keys=True)
        digest = hashlib.sha256(payload.encode())
        docs_dir = settings.home / "eval-cache" / f"docs-{digest.hexdigest()[:16]}"
        docs_file = docs_dir / "paragraphs.jsonl"
        if not docs_file.is_file():
            docs_dir.mkdir(parents=True, exist_ok=True)
            tmp = docs_file.with_suffix(".tmp")
            tmp.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in dataset.documents) + "\n",
                           encoding="utf-8")
            tmp.replace(docs_file)
        paths = [docs_file]
    index_dir = settings.home / "eval-cache" / f"index-{digest.hexdigest()[:16]}"
    index = Index(settings.replace(index_dir=index_dir))
    report = index.update(paths, notify=notify)
    if report.embedded_chunks:
        notify(f"indexed {report.total_documents} documents ({report.embedded_chunks} chunks embedded)")
    return index


def _rank_of(gold: Sequence[str], doc_ids: list[str]) -> int | None:
    ranked = list(dict.fromkeys(doc_ids))
    return next((i for i, doc in enumerate(ranked, start=1) if doc in gold), None)


def retrieval_metrics(ranks: list[int | None], latencies_ms: list[float] | None = None) -> dict[str, Any]:
    n = len(ranks)
    out: dict[str, Any] = {"n_questions": n}
    for k in (1, 3, 5, 10):
        out[f"recall@{k}"] = round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) if n else None
    out["mrr@10"] = round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4) if n else None
    if latencies_ms:
        out["p50_ms"], out["p95_ms"] = _p50_p95(latencies_ms)
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, int(round(q * len(ordered))) - 1)], 1)


def _p50_p95(latencies_ms: list[float]) -> tuple[float | None, float | None]:
    if not latencies_ms:
        return None, None
    return round(statistics.median(latencies_ms), 1), percentile(latencies_ms, 0.95)


# ----------------------------------------------------------------------------- answers

_PUNCTUATION = re.compile(r"[^\w\s]|_")


def answer_tokens(text: str) -> list[str]:
    """SQuAD-style answer tokens with Arabic normalization: diacritics, alef forms, ى/ة and
    Latin case folded, punctuation dropped."""
    return _PUNCTUATION.sub(" ", normalize(text)).split()


def f1_score(prediction: str, gold: str) -> float:
    predicted, expected = answer_tokens(prediction), answer_tokens(gold)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum(min(predicted.count(t), expected.count(t)) for t in set(predicted))
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def contains_answer(quote: str, gold: str) -> bool:
    gold = gold.strip(" .،,؛:;\"'«»“”()")
    return bool(gold) and find_folded(quote, gold) is not None


def history_of(answer: Answer) -> list[dict[str, Any]]:
    """One finished turn as the history entries the next question gets (as the chat keeps it)."""
    return [{"role": "user", "content": answer.question},
            {"role": "assistant", "content": answer.answer,
             "doc_ids": list(dict.fromkeys(c.doc_id for c in answer.citations))}]


def ask_in_context(index: Index, q: Question, model: str | None = None) -> tuple[Answer, float]:
    """Ask the earlier turns of the question's conversation first, then the question; returns
    the answer and the time of the last turn alone."""
    history: list[dict[str, Any]] = []
    for earlier in q.history:
        history += history_of(index.ask(earlier, history=history, model=model))
    began = time.perf_counter()
    answer = index.ask(q.question, history=history or None, model=model)
    return answer, (time.perf_counter() - began) * 1000


def answer_metrics(dataset: Dataset, index: Index, *, model: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    """Run the answerer on every question: is a gold answer inside a cited quote (the first
    one, any one), how long are the quotes, are refusals right, is every quote verbatim at its
    offsets, how good are the stated facts, and are uncovered terms reported."""
    return summarize_answers(answer_records(dataset, index, model=model, limit=limit))


def answer_records(dataset: Dataset, index: Index, *, model: str | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """One record per question: what the answer got right, for `summarize_answers`."""
    questions = dataset.questions[:limit] if limit else dataset.questions
    store = index.store
    documents: dict[str, str] = {}
    records = []
    if questions:
        index.ask(questions[0].question, model=model)  # warm up (model, caches)
    for q in questions:
        answer, elapsed = ask_in_context(index, q, model)
        record: dict[str, Any] = {"qid": q.qid, "answerable": q.answerable, "ms": elapsed,
                                  "refused": answer.refused, "quotes": len(answer.citations), "verified": 0,
                                  "quoted_chars": sum(len(c.quote) for c in answer.citations)}
        for c in answer.citations:
            if c.doc_id not in documents:
                documents[c.doc_id] = store.document(c.doc_id).text
            record["verified"] += documents[c.doc_id][c.start:c.end] == c.quote
        if q.kind == "switch":
            fresh = index.ask(q.question, model=model)
            record["switch_same"] = [p.chunk_id for p in fresh.passages] == [p.chunk_id for p in answer.passages]
        if q.answerable:
            record["gold_any"] = any(contains_answer(c.quote, a) for c in answer.citations for a in q.answers)
            record["gold_first"] = bool(answer.citations) and any(
                contains_answer(answer.citations[0].quote, a) for a in q.answers)
            record["gold_doc_first"] = bool(answer.citations) and answer.citations[0].doc_id in q.gold_docs
            if answer.fact is not None:
                record["fact_f1"] = max((f1_score(answer.fact.text, a) for a in q.answers), default=0.0)
            cited_docs = {c.doc_id for c in answer.citations}
            record["expected_docs"] = len(q.expected_docs)
            record["expected_docs_cited"] = len(set(q.expected_docs) & cited_docs)
            if q.uncovered:
                record["uncovered_expected"] = len(q.uncovered)
                record["uncovered_found"] = sum(any(_same_term(term, found) for found in answer.uncovered)
                                                for term in q.uncovered)
            else:
                record["uncovered_false"] = bool(answer.uncovered)
        records.append(record)
    return records


def summarize_answers(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]

    def share(rows: Sequence[dict[str, Any]], key: str) -> float | None:
        return round(sum(bool(r.get(key)) for r in rows) / len(rows), 4) if rows else None

    refused = [r for r in records if r["refused"]]
    facts = [r["fact_f1"] for r in answerable if "fact_f1" in r]
    quoted = [r["quoted_chars"] for r in records if r["quotes"]]
    n_quotes = sum(r["quotes"] for r in records)
    p50, p95 = _p50_p95([r["ms"] for r in records])
    result: dict[str, Any] = {
        "n": len(records),
        "answer_in_cited_quote": share(answerable, "gold_any"),
        "answer_in_first_quote": share(answerable, "gold_first"),
        "gold_article_cited_first": share(answerable, "gold_doc_first"),
        "median_quoted_chars": statistics.median(quoted) if quoted else None,
        "false_refusals": sum(r["refused"] for r in answerable),
        "refusal_precision": round(sum(not r["answerable"] for r in refused) / len(refused), 4) if refused else None,
        "refusal_recall": share(unanswerable, "refused"),
        "verified_quotes": round(sum(r["verified"] for r in records) / n_quotes, 4) if n_quotes else None,
        "n_quotes": n_quotes,
        "fact_rate": round(len(facts) / len(answerable), 4) if answerable else None,
        "fact_f1": round(statistics.mean(facts), 4) if facts else None,
        "answer_p50_ms": p50,
        "answer_p95_ms": p95,
    }
    expected = sum(r.get("uncovered_expected", 0) for r in answerable)
    if expected:
        result["uncovered_recall"] = round(sum(r.get("uncovered_found", 0) for r in answerable) / expected, 4)
    checked = [r for r in answerable if "uncovered_false" in r]
    if checked:
        result["uncovered_false_alarms"] = share(checked, "uncovered_false")
    docs = sum(r.get("expected_docs", 0) for r in answerable)
    if docs:
        result["expected_articles_cited"] = round(sum(r.get("expected_docs_cited", 0) for r in answerable) / docs, 4)
    switches = [r for r in records if "switch_same" in r]
    if switches:
        result["switch_same_passages_as_fresh_chat"] = share(switches, "switch_same")
    return result


def _same_term(expected: str, found: str) -> bool:
    a, b = " ".join(answer_tokens(expected)), " ".join(answer_tokens(found))
    return bool(a and b) and (a in b or b in a)


# ----------------------------------------------------------------------------- retrieval

def evaluate(dataset: Dataset, index: Index, *, k: int = 10, mode: str | None = None) -> dict[str, Any]:
    answerable = [q for q in dataset.questions if q.answerable]
    ranks: dict[str, int | None] = {}
    latencies: list[float] = []
    index.search("warm up", k=1, mode=mode)
    for q in dataset.questions:
        began = time.perf_counter()
        passages = index.search(q.question, k=k, mode=mode)
        latencies.append((time.perf_counter() - began) * 1000)
        ranks[q.qid] = _rank_of(q.gold_docs, [p.doc_id for p in passages])

    result = retrieval_metrics([ranks[q.qid] for q in answerable], latencies)
    result.update({"dataset": dataset.name, "mode": mode or index.settings.search_mode, "k": k,
                   "n_documents": len(index.store.document_ids())})
    result["by_language"] = {
        lang: retrieval_metrics([ranks[q.qid] for q in answerable if q.lang == lang])
        for lang in sorted({q.lang for q in answerable})}
    unanswerable = [q for q in dataset.questions if not q.answerable]
    if unanswerable:
        result["n_unanswerable"] = len(unanswerable)
    return result
