"""`rag …` commands. The only place that prints errors and chooses exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .api import Index
from .config import Settings
from .errors import ConfigError, FilterError, RagError
from .filters import parse_date
from .store import Store
from .types import IndexedDocument, Passage, RemovalReport, UpdateReport


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", metavar="DIR", help="index directory (env RAG_INDEX_DIR)")
    parser.add_argument("--settings", metavar="FILE", help="TOML settings file (env RAG_SETTINGS)")
    parser.add_argument("--embedding-model", metavar="NAME",
                        help="sentence-transformers model name or path (env RAG_EMBEDDING_MODEL)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _date(value: str) -> str:
    try:
        parse_date(value)
    except FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="YYYY-MM-DD", type=_date,
                        help="only articles published on or after this date (articles without a date are left out)")
    parser.add_argument("--until", metavar="YYYY-MM-DD", type=_date,
                        help="only articles published on or before this date (articles without a date are left out)")
    parser.add_argument("--source", metavar="OUTLET", action="append", dest="sources",
                        help="only articles from this outlet (any case), or with this document id or id "
                             "prefix (a folder: news/, a file: feed.jsonl); repeat it or separate with commas")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag", description="Cited answers from Arabic news articles, offline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="index new and changed documents, drop removed ones")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="folders or files to add to the index's sources (which it remembers)")
    p.add_argument("--replace", action="store_true",
                   help="make PATHs the only sources: documents from other folders are removed")
    p.add_argument("--full", action="store_true", help="rebuild everything from scratch")
    p.add_argument("--optimize", action="store_true",
                   help="then merge the index's segments into one (no re-embedding)")
    p.add_argument("--check", action="store_true",
                   help="compare every index file with its checksum, not only the files changed "
                        "since their last check, and repair what differs")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="embed on the Ray cluster at ADDRESS (host:port, ray://host:port or auto; none: a "
                        "local Ray), after the PATHs; needs pip install -e '.[distributed]'")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="Ray actors embedding at once (default: one per GPU, else one per node)")
    _common(p)

    p = sub.add_parser("search", help="find the passages that best match a question")
    p.add_argument("query", metavar="QUESTION")
    p.add_argument("--k", type=int, default=None, help="number of passages (default 5)")
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default=None)
    _filters(p)
    _common(p)

    p = sub.add_parser("ask", help="answer a question with verified quotes from the articles")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--model", default=None,
                   help="litellm model string, or 'extractive' (default: settings' llm_model, else extractive)")
    p.add_argument("--k", type=int, default=None, help="passages to retrieve (default 5)")
    _filters(p)
    _common(p)

    p = sub.add_parser("eval", help="measure retrieval on a SQuAD-format or JSONL question set")
    p.add_argument("dataset", metavar="DATASET", type=Path,
                   help="SQuAD-format JSON (XQuAD, ARCD) or JSONL questions (like seeds_qa_dev.jsonl)")
    p.add_argument("--corpus", nargs="+", type=Path, default=[], metavar="EXTRA",
                   help="SQuAD files whose paragraphs join the corpus, or the document folder(s) "
                        "a JSONL set asks about")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default=None)
    p.add_argument("--answers", action="store_true",
                   help="also run the answerer (always on for JSONL sets): quotes, refusals")
    p.add_argument("--model", default=None, help="answer with this LLM instead of the extractive answerer")
    p.add_argument("--limit", type=int, default=None, help="answer metrics on the first N questions only")
    _common(p)

    p = sub.add_parser("info", help="show what an index holds")
    p.add_argument("--check", action="store_true",
                   help="also compare every file with its checksum (reads the whole index)")
    _common(p)

    p = sub.add_parser("docs", help="list the indexed documents: id, title, outlet, date, URL, file, chunks")
    _common(p)

    p = sub.add_parser("remove", help="take documents out of the index (uploaded files are deleted too)")
    p.add_argument("selectors", nargs="+", metavar="ID_OR_PATH",
                   help="document ids (as `rag docs` lists them) or paths of the files or folders they come from")
    _common(p)

    p = sub.add_parser("chat-password", help="make a salted hash for RAG_CHAT_PASSWORD_HASH (chat login)")
    p.add_argument("--stdin", action="store_true",
                   help="read the password from standard input instead of asking for it")

    p = sub.add_parser("feedback", help="the ratings given to the chat's answers")
    feedback = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    p = feedback.add_parser(
        "export", help="every rated answer: question, answer, citations, rating, comment (JSONL)",
        description="Reads the chat's saved chats (<RAG_HOME>/chat.sqlite3). --json or --out: one JSON "
                    "object per rated answer and line; otherwise a short summary.")
    p.add_argument("--out", metavar="FILE", type=Path, help="write the JSONL records to FILE")
    p.add_argument("--database", metavar="FILE", type=Path,
                   help="the chat history file (default: chat.sqlite3 in RAG_HOME)")
    p.add_argument("--settings", metavar="FILE", help="TOML settings file (env RAG_SETTINGS)")
    p.add_argument("--json", action="store_true", help="the JSONL records on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "chat-password":  # needs no settings or index
        try:
            return cmd_chat_password(args)
        except RagError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    try:
        settings = Settings.load(args.settings, index_dir=getattr(args, "index", None),
                                 embedding_model=getattr(args, "embedding_model", None))
        return COMMANDS[args.command](args, settings)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.json and sys.stderr.isatty() and not os.environ.get("CI")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    embedder = None
    if args.ray is not None:
        from .distributed import RayEmbedder

        embedder = RayEmbedder(settings, address=args.ray, workers=args.ray_workers)
    elif args.ray_workers is not None:
        raise ConfigError("--ray-workers goes with --ray: add --ray [ADDRESS], or leave --ray-workers out")
    report = Index(settings, embedder=embedder).update(
        args.paths or None, full=args.full, replace=args.replace, optimize=args.optimize, check=args.check,
        progress=_progress_wanted(args), notify=_say)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(_describe_report(report))
    return 0


def _describe_report(report: UpdateReport) -> str:
    def part(label: str, counts) -> str:
        return f"{label} {counts.documents} ({counts.chunks} chunks)"

    lines = [
        f"index: {report.index_dir}" + (f"  [full rebuild: {report.rebuild_reason}]"
                                        if report.full_rebuild else ""),
        "documents: " + ", ".join([part("added", report.added), part("changed", report.changed),
                                   part("removed", report.removed),
                                   part("unchanged", report.unchanged)]),
        f"embedded {report.embedded_chunks} chunks in {report.seconds:.1f} s",
    ]
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    passages = Index(settings).search(args.query, k=args.k, mode=args.mode, since=args.since, until=args.until,
                                      sources=args.sources)
    if args.json:
        _print_json([p.to_dict() for p in passages])
        return 0
    if not passages:
        print("no passages found")
    for rank, passage in enumerate(passages, start=1):
        print(_format_passage(rank, passage))
    return 0


def _format_passage(rank: int, p: Passage) -> str:
    text = " ".join(p.text.split())
    origin = _origin(p.outlet, p.date, p.url)
    return (f"{rank}. [{p.score:.3f}] {p.title}  ({p.doc_id} {p.start}–{p.end})\n"
            + (f"   {origin}\n" if origin else "") + f"   {text}\n")


def _origin(outlet: str | None, date: str | None, url: str | None) -> str:
    """outlet · date · URL, as far as the article states them."""
    return " · ".join(value for value in (outlet, (date or "")[:10], url) if value)


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    index = Index(settings)
    filters = {"since": args.since, "until": args.until, "sources": args.sources}
    if args.json:
        _print_json(index.ask(args.question, k=args.k, model=args.model, **filters).to_dict())
        return 0
    stream = index.stream(args.question, k=args.k, model=args.model, **filters)
    streamed = []
    for piece in stream:
        streamed.append(piece)
        print(piece, end="", flush=True)
    print()
    answer = stream.answer()
    if answer.answer.strip() != "".join(streamed).strip():
        # verification changed the generated text (quotes rewritten or removed, bad [n] dropped)
        print("\nVerified answer:\n" + answer.answer)
    if answer.notice:
        print(f"\nnote: {answer.notice}", file=sys.stderr)
    if answer.notice_detail:
        print(f"      ({answer.notice_detail})", file=sys.stderr)
    if answer.citations:
        print("\nSources:")
        for c in answer.citations:
            passage = answer.passages[c.n - 1]
            origin = _origin(passage.outlet, passage.date, passage.url)
            print(f"[{c.n}] {c.title} ({c.doc_id}, characters {c.start}–{c.end})"
                  + (f"\n    {origin}" if origin else "") + f"\n    «{c.quote}»")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation import answer_metrics, evaluate, load_dataset, prepare_index

    dataset = load_dataset(args.dataset, args.corpus)
    index = prepare_index(dataset, settings, notify=_say)
    if dataset.conversations:
        # a follow-up alone is not a retrieval query: conversations are scored by their answers
        result = {"dataset": dataset.name, "n_questions": len(dataset.questions),
                  "answers": answer_metrics(dataset, index, model=args.model, limit=args.limit)}
    else:
        result = evaluate(dataset, index, k=args.k, mode=args.mode)
        if args.answers or dataset.documents is None or any(q.uncovered or q.expected_docs
                                                             for q in dataset.questions):
            result["answers"] = answer_metrics(dataset, index, model=args.model, limit=args.limit)
    if args.json:
        _print_json(result)
        return 0
    if not dataset.conversations:
        print(f"{result['dataset']}: {result['n_questions']} questions, {result['n_documents']} documents, "
              f"mode {result['mode']}")
        header = ["", "n", "R@1", "R@5", "R@10", "MRR@10"]
        rows = [["all", result]] + [[lang, m] for lang, m in result["by_language"].items()]
        print("  ".join(f"{h:>7}" for h in header))
        for label, m in rows:
            print("  ".join(f"{v:>7}" for v in [label, m["n_questions"], m["recall@1"], m["recall@5"],
                                                 m["recall@10"], m["mrr@10"]]))
        print(f"latency p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")
        if "n_unanswerable" in result:
            print(f"unanswerable questions (not in the retrieval metrics): {result['n_unanswerable']}")
    else:
        print(f"{result['dataset']}: {result['n_questions']} conversations")
    if "answers" in result:
        print("answers: " + ", ".join(f"{key} {value}" for key, value in result["answers"].items()))
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    store = Store.open(settings.resolved_index_dir, check=args.check)  # even when settings differ
    files = store.manifest.files
    info = {**store.manifest.to_dict(), "index_dir": str(store.index_dir),
            "matches_current_settings": store.manifest.fingerprint == settings.fingerprint(),
            "files": len(files), "bytes": sum(f.size for f in files.values())}
    if args.check:
        info["check"] = (f"all {len(files)} files match their checksums" if files else
                         "no checksums recorded (an index from an older version): run `rag index` to add them")
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    documents = Index(settings).documents()
    if args.json:
        _print_json([d.to_dict() for d in documents])
        return 0
    for d in documents:
        print(_format_document(d))
    print(f"{len(documents)} documents, {sum(d.chunks for d in documents)} chunks; "
          "take one out with `rag remove ID`")
    return 0


def _format_document(d: IndexedDocument) -> str:
    origin = _origin(d.outlet, d.date, d.url)
    return (f"{d.doc_id}  {d.title}\n" + (f"    {origin}\n" if origin else "")
            + f"    {d.chunks} chunks, {d.characters} characters"
            + f"{', uploaded' if d.uploaded else ''}  {d.source_path}")


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    report = Index(settings).remove(args.selectors, notify=_say)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(_describe_removal(report))
    return 0


def _describe_removal(report: RemovalReport) -> str:
    lines = [f"removed {d.doc_id} ({d.chunks} chunks)" for d in report.removed]
    lines += [f"deleted the uploaded file {path}" for path in report.deleted_files]
    lines += [f"note: {d.doc_id} came from {d.source_path}, in a source folder of the index: the next `rag index` "
              "adds it again unless you delete or move that file first" for d in report.will_return]
    lines.append(f"index: {report.index_dir} ({report.chunks} chunks removed in {report.seconds:.1f} s, "
                 "nothing re-embedded)")
    return "\n".join(lines)


def cmd_chat_password(args: argparse.Namespace) -> int:
    import getpass

    from .auth import hash_password

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("chat password: ")
        if getpass.getpass("again: ") != password:
            print("error: the two passwords differ: run `rag chat-password` again", file=sys.stderr)
            return 1
    print(hash_password(password))
    print("put it in the chat server's environment as RAG_CHAT_PASSWORD_HASH=… (with RAG_CHAT_USERNAME), "
          "and unset RAG_CHAT_PASSWORD", file=sys.stderr)
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from .history import database_path, feedback_records

    records = feedback_records(args.database or database_path(settings.home))
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    if args.out is not None:
        try:
            args.out.write_text(lines, encoding="utf-8")
        except OSError as exc:
            raise RagError(f"cannot write {args.out} ({exc.strerror}): choose another --out") from None
    if args.json:
        print(lines, end="")
    elif args.out is None:
        for r in records:
            comment = f" — {' '.join(r.comment.split())}" if r.comment else ""
            print(f"{'+' if r.rating == 'up' else '-'} {r.rated_at or ''}  {' '.join(r.question.split())}{comment}")
    up = sum(r.rating == "up" for r in records)
    summary = f"{len(records)} rated answers: {up} up, {len(records) - up} down"
    print(summary + (f"; written to {args.out}" if args.out is not None else ""),
          file=sys.stderr if args.json or args.out is not None else sys.stdout)
    return 0


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


COMMANDS = {"index": cmd_index, "search": cmd_search, "ask": cmd_ask, "eval": cmd_eval, "info": cmd_info,
            "docs": cmd_docs, "remove": cmd_remove, "feedback": cmd_feedback}


if __name__ == "__main__":
    sys.exit(main())
