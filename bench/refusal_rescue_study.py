"""Could the answer reader rescue answerable questions that the relevance gate refuses? Prints JSON.

For every question whose best passage falls below the refusal threshold, the reader reads the
best READ_SENTENCES sentences; a rule "answer anyway when the reader's best margin exceeds M"
is scored by how many answerable questions it would rescue (and how many of those have the gold
answer in a read sentence) against how many unanswerable ones it would answer.

  positives  held-out (fold-1) XQuAD-ar and ARCD-train questions on their own corpus, the seeds
             dev and extra sets' answerable questions
  negatives  the same questions asked of another corpus (XQuAD ↔ ARCD ↔ seeds), the English XQuAD
             questions asked of ARCD and the seeds, the seeds sets' unanswerable questions

    .venv/bin/python bench/refusal_rescue_study.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_reader import fold_of  # noqa: E402

from rag.answer import REFUSAL_THRESHOLD  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.evaluation import contains_answer, load_dataset, prepare_index  # noqa: E402
from rag.quotes import READ_SENTENCES, units  # noqa: E402
from rag.reader import WEIGHTS, Reader  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"


def main() -> int:
    settings = Settings.load()
    quiet = lambda message: None  # noqa: E731
    xquad = load_dataset(EVAL / "xquad_ar" / "xquad.ar.json")
    arcd = load_dataset(EVAL / "arcd" / "arcd-train.json")
    seeds = [load_dataset(EVAL / name, [ROOT / "seeds"]) for name in ("seeds_qa_dev.jsonl", "seeds_qa_extra.jsonl")]
    indexes = {name: prepare_index(ds, settings, quiet) for name, ds in
               (("xquad", xquad), ("arcd", arcd), ("seeds", seeds[0]))}
    retrievers = {name: Retriever(index.store, index.embedder) for name, index in indexes.items()}
    reader = Reader(settings.models_dir, WEIGHTS, backend=settings.reader_backend)
    english = [json.loads(line) for line in (EVAL / "xquad_en_questions.jsonl").read_text().splitlines()]

    cases = []  # (question, corpus, gold answers or None, tag)
    for ds, own, other in ((xquad, "xquad", "arcd"), (arcd, "arcd", "xquad")):
        for q in ds.questions:
            if fold_of(q.group or "") == 0:  # the reader trained on fold 0
                continue
            cases += [(q.question, own, q.answers, own), (q.question, other, None, f"{own}->{other}"),
                      (q.question, "seeds", None, f"{own}->seeds")]
    for row in english:
        cases += [(row["question"], "arcd", None, "en->arcd"), (row["question"], "seeds", None, "en->seeds")]
    for ds in seeds:
        cases += [(q.question, "seeds", q.answers if q.answerable else None, "seeds") for q in ds.questions]

    weak = []
    for question, corpus, answers, tag in cases:
        retrieval = retrievers[corpus].retrieve(question, k=indexes[corpus].settings.k)
        if max((p.score for p in retrieval.passages), default=0.0) >= REFUSAL_THRESHOLD:
            continue
        read = units(retrieval)[:READ_SENTENCES]
        readings = reader.read(question, [u.text for u in read])
        weak.append({"tag": tag, "answerable": answers is not None,
                     "margin": max((r.score for r in readings), default=-1e4),
                     "gold_read": bool(answers) and any(contains_answer(u.text, a) for u in read for a in answers)})

    positives = [w for w in weak if w["answerable"]]
    negatives = [w for w in weak if not w["answerable"]]
    curve = []
    for margin in (0, 2, 4, 6, 8, 10, 12):
        rescued = [w for w in positives if w["margin"] > margin]
        answered = [w for w in negatives if w["margin"] > margin]
        curve.append({"min_margin": margin, "answerable_rescued": len(rescued),
                      "rescued_with_gold_read": sum(w["gold_read"] for w in rescued),
                      "unanswerable_answered": len(answered), "by_source": dict(Counter(w["tag"] for w in answered))})
    print(json.dumps({"questions": len(cases), "refused_answerable": len(positives),
                      "refused_answerable_gold_read": sum(w["gold_read"] for w in positives),
                      "refused_unanswerable": len(negatives),
                      "unanswerable": sum(answers is None for _, _, answers, _ in cases),
                      "curve": curve}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
