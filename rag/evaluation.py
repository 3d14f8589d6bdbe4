"""`rag eval`: retrieval (and answer) quality on a question set, with the production code path.

Datasets:
  - SQuAD-format JSON (XQuAD, ARCD): articles → paragraphs → qas. Every unique paragraph of the
    dataset and of the `--corpus` files becomes one document (title = article title) in an index
    built for the evaluation; a question's gold document is the paragraph it was asked on.
  - JSONL like tests/data/eval/seeds_qa_dev.jsonl (question, lang, doc, answer, answerable);
    `--corpus` names the document folders, whose ids the `doc` fields refer to.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import Index
from .arabic import find_folded, has_arabic
from .config import Settings
from .errors import ConfigError

STRIP = " \t\n-–—"


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    gold_doc: str | None
    answers: tuple[str, ...]
    lang: str

    @property
    def answerable(self) -> bool:
        return self.gold_doc is not None


@dataclass(frozen=True)
class Dataset:
    name: str
    questions: list[Question]
    documents: list[dict[str, str]] | None  # SQuAD: the paragraphs as records; JSONL: None
    corpus_paths: list[Path]


def _lang(text: str, given: str | None = None) -> str:
    return given or ("ar" if has_arabic(text) else "en")


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
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = row["question"].strip(STRIP)
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(f"{path}:{number} is not a question record with a `question` field") from None
        answerable = row.get("answerable", row.get("doc") is not None)
        answers = row.get("answer") or ()
        questions.append(Question(
            qid=str(row.get("id", number)), question=text,
            gold_doc=row.get("doc") if answerable else None,
            answers=tuple([answers] if isinstance(answers, str) else answers),
            lang=_lang(text, row.get("lang"))))
    return Dataset(path.name, questions, None, list(corpus))


def _squad_paragraphs(path: Path) -> list[tuple[str, str, list[dict]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [(article.get("title", path.stem), paragraph["context"], paragraph.get("qas", []))
                for article in data["data"] for paragraph in article["paragraphs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not SQuAD-format JSON (data → paragraphs → context/qas): {exc}") from None


def _load_squad(path: Path, corpus: Sequence[Path]) -> Dataset:
    ids: dict[str, str] = {}
    documents = []
    questions = []

    def doc_id_for(title: str, context: str) -> str:
        key = context.strip()
        if key not in ids:
            ids[key] = f"p{len(ids) + 1:05d}"
            documents.append({"id": ids[key], "title": title.replace("_", " "), "text": context})
        return ids[key]

    for title, context, qas in _squad_paragraphs(path):
        gold = doc_id_for(title, context)
        for qa in qas:
            text = qa["question"].strip(STRIP)
            answers = tuple(a["text"] for a in qa.get("answers", []))
            questions.append(Question(qid=str(qa.get("id", len(questions))), question=text,
                                      gold_doc=gold, answers=answers, lang=_lang(text)))
    for extra in corpus:
        for title, context, _ in _squad_paragraphs(extra):
            doc_id_for(title, context)
    return Dataset(path.name, questions, documents, [])


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


def _rank_of(gold: str | None, doc_ids: list[str]) -> int | None:
    ranked = list(dict.fromkeys(doc_ids))
    return ranked.index(gold) + 1 if gold in ranked else None


def retrieval_metrics(ranks: list[int | None], latencies_ms: list[float] | None = None) -> dict[str, Any]:
    n = len(ranks)
    out: dict[str, Any] = {"n_questions": n}
    for k in (1, 3, 5, 10):
        out[f"recall@{k}"] = round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) if n else None
    out["mrr@10"] = round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4) if n else None
    if latencies_ms:
        out["p50_ms"], out["p95_ms"] = _p50_p95(latencies_ms)
    return out


def _p50_p95(latencies_ms: list[float]) -> tuple[float | None, float | None]:
    if not latencies_ms:
        return None, None
    ordered = sorted(latencies_ms)
    return (round(statistics.median(ordered), 1),
            round(ordered[max(0, int(round(0.95 * len(ordered))) - 1)], 1))


def answer_metrics(dataset: Dataset, index: Index, *, model: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    """Run the answerer on every question: is a gold answer inside a cited quote, are the
    refusals right, and is every quote verbatim at its offsets in the stored document."""
    questions = dataset.questions[:limit] if limit else dataset.questions
    answered_with_gold = answerable = refused_right = refused_wrong = unanswerable = 0
    quotes = verified = 0
    latencies = []
    store = index.store
    documents: dict[str, str] = {}
    for q in questions:
        began = time.perf_counter()
        answer = index.ask(q.question, model=model)
        latencies.append((time.perf_counter() - began) * 1000)
        for c in answer.citations:
            quotes += 1
            if c.doc_id not in documents:
                documents[c.doc_id] = store.document(c.doc_id).text
            verified += documents[c.doc_id][c.start:c.end] == c.quote
        if q.answerable:
            answerable += 1
            refused_wrong += answer.refused
            answered_with_gold += any(_contains(c.quote, a) for c in answer.citations for a in q.answers)
        else:
            unanswerable += 1
            refused_right += answer.refused
    refused = refused_right + refused_wrong
    p50, p95 = _p50_p95(latencies)
    return {
        "answer_in_cited_quote": round(answered_with_gold / answerable, 4) if answerable else None,
        "false_refusals": refused_wrong,
        "refusal_precision": round(refused_right / refused, 4) if refused else None,
        "refusal_recall": round(refused_right / unanswerable, 4) if unanswerable else None,
        "verified_quotes": round(verified / quotes, 4) if quotes else None,
        "n_quotes": quotes,
        "answer_p50_ms": p50,
        "answer_p95_ms": p95,
    }


def _contains(quote: str, gold: str) -> bool:
    gold = gold.strip(" .،,؛:;\"'«»“”()")
    return bool(gold) and find_folded(quote, gold) is not None


def evaluate(dataset: Dataset, index: Index, *, k: int = 10, mode: str | None = None) -> dict[str, Any]:
    answerable = [q for q in dataset.questions if q.answerable]
    ranks: dict[str, int | None] = {}
    latencies: list[float] = []
    index.search("warm up", k=1, mode=mode)
    for q in dataset.questions:
        began = time.perf_counter()
        passages = index.search(q.question, k=k, mode=mode)
        latencies.append((time.perf_counter() - began) * 1000)
        ranks[q.qid] = _rank_of(q.gold_doc, [p.doc_id for p in passages])

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
