"""The `rag` command in real subprocesses, against real indexes."""

from __future__ import annotations

import json

from .conftest import cli_env, run_cli

CIVIL_WAR_AR = "ماذا قال ماسك عن الحرب الأهلية؟"
CIVIL_WAR_EN = "What did Musk say about civil war?"


def test_index_search_json_and_errors(settings, corpus):
    env = cli_env(settings)
    missing = run_cli("search", CIVIL_WAR_AR, env=env, check=False)
    assert missing.returncode == 1
    assert "no index at" in missing.stderr and "rag index seeds" in missing.stderr
    assert "Traceback" not in missing.stderr

    (corpus / "notes.docx").write_bytes(b"PK")
    built = run_cli("index", str(corpus), "--json", env=env)
    report = json.loads(built.stdout)
    assert report["added"] == {"documents": 5, "chunks": report["embedded_chunks"]}
    assert report["full_rebuild"] is True
    assert "notes.docx" in built.stderr  # the skipped file is named

    again = json.loads(run_cli("index", "--json", env=env).stdout)  # sources remembered
    assert again["unchanged"]["documents"] == 5 and again["embedded_chunks"] == 0

    hits = json.loads(run_cli("search", CIVIL_WAR_AR, "--k", "3", "--json", env=env).stdout)
    assert len(hits) == 3
    for key in ("doc_id", "title", "text", "start", "end", "score", "chunk_id"):
        assert key in hits[0]
    assert hits[0]["doc_id"] == "000_4180ecd25a632971.txt"
    assert "الحرب الأهلية" in hits[0]["text"]
    document = (corpus / hits[0]["doc_id"]).read_text(encoding="utf-8")
    assert hits[0]["text"] in document

    human = run_cli("search", CIVIL_WAR_EN, env=env).stdout
    assert "1. [" in human and "000_4180ecd25a632971.txt" in human

    info = json.loads(run_cli("info", "--json", env=env).stdout)
    assert info["documents"] == 5 and info["embedding"]["dimension"] == 384


def test_bad_setting_is_reported_with_its_name(settings):
    proc = run_cli("search", "x", env={**cli_env(settings), "RAG_CHUNK_TOKENS": "many"}, check=False)
    assert proc.returncode == 1
    assert "RAG_CHUNK_TOKENS" in proc.stderr and "'many'" in proc.stderr


def test_search_acceptance_on_the_seeds(seed_index):
    top = seed_index.search(CIVIL_WAR_AR, k=5)
    assert top[0].doc_id == "000_4180ecd25a632971.txt" and "الحرب الأهلية" in top[0].text
    english = seed_index.search(CIVIL_WAR_EN, k=3)
    assert "000_4180ecd25a632971.txt" in [p.doc_id for p in english]


def test_bad_documents_get_one_line_each_once_and_the_rest_is_indexed(settings, tmp_path):
    corpus = tmp_path / "bad-corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("خبر جيد\nأعلنت الهيئة عن غرامة جديدة على المنصة.\n", encoding="utf-8")
    (corpus / "deep.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    record = json.dumps({"id": "r1", "text": "سجل سليم."}, ensure_ascii=False).encode()
    (corpus / "feed.jsonl").write_bytes(record + b"\n" + b"[" * 200_000 + b"]" * 200_000 + b"\n")
    with (corpus / "huge.txt").open("wb") as fh:
        fh.truncate(3_000_000)  # over the 2 MB limit set below
    env = {**cli_env(settings), "RAG_MAX_DOCUMENT_MB": "2"}
    # the same folder twice, and a file inside it again: one document each
    first = run_cli("index", str(corpus), str(corpus), str(corpus / "good.txt"), "--json", env=env)
    assert "Traceback" not in first.stderr
    assert json.loads(first.stdout)["added"]["documents"] == 2  # good.txt and record r1
    lines = [line for line in first.stderr.splitlines() if line.startswith("skipped")]
    assert len(lines) == 3, first.stderr
    assert any("deep.json" in line and "nests too deeply" in line for line in lines)
    assert any("feed.jsonl:2" in line for line in lines)
    assert any("huge.txt" in line and "max_document_mb" in line for line in lines)
    again = run_cli("index", "--json", env=env)
    assert not [line for line in again.stderr.splitlines() if line.startswith("skipped")], again.stderr
    assert "3 file(s) still skipped as reported before" in again.stderr


def test_docs_lists_and_remove_takes_out(settings, corpus):
    env = cli_env(settings)
    run_cli("index", str(corpus), env=env)
    listed = json.loads(run_cli("docs", "--json", env=env).stdout)
    assert [d["doc_id"] for d in listed] == sorted(p.name for p in corpus.iterdir())
    first = listed[0]
    assert first["source_path"] == str(corpus.resolve() / first["doc_id"]) and first["chunks"] >= 1
    assert first["characters"] > 500 and first["uploaded"] is False and "title" in first
    human = run_cli("docs", env=env).stdout
    assert f"{first['doc_id']}  {first['title']}" in human and "5 documents" in human and "rag remove ID" in human

    unknown = run_cli("remove", "nope.txt", env=env, check=False)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines() == [unknown.stderr.strip()]  # one line
    assert "'nope.txt'" in unknown.stderr and "`rag docs`" in unknown.stderr

    removed = run_cli("remove", first["doc_id"], env=env).stdout
    assert f"removed {first['doc_id']} ({first['chunks']} chunks)" in removed
    assert "the next `rag index` adds it again" in removed and "nothing re-embedded" in removed
    after = json.loads(run_cli("docs", "--json", env=env).stdout)
    assert [d["doc_id"] for d in after] == [d["doc_id"] for d in listed[1:]]
    hits = json.loads(run_cli("search", CIVIL_WAR_AR, "--k", "5", "--json", env=env).stdout)
    assert first["doc_id"] not in [h["doc_id"] for h in hits]
    back = json.loads(run_cli("index", "--json", env=env).stdout)
    assert back["added"]["documents"] == 1 and back["unchanged"]["documents"] == 4


WIRE = [
    {"id": "wire/fine", "title": "ألمانيا تغرم منصة فيديو", "outlet": "DW عربية", "date": "2024-03-05",
     "url": "https://news.example/de?a=1",
     "text": "ألمانيا تغرم منصة فيديو\nفرضت هيئة تنظيم الإعلام الألمانية غرامة قدرها سبعة ملايين يورو على منصة "
             "بث مرئي لأنها تأخرت في حذف منشورات تحرض على الكراهية."},
    {"id": "wire/riots", "title": "اعتقالات بعد أعمال الشغب", "outlet": "BBC Arabic", "date": "2024-08-06",
     "text": "اعتقالات بعد أعمال الشغب\nاعتقلت الشرطة البريطانية عشرات الأشخاص بعد أعمال شغب اندلعت عقب "
             "منشورات مضللة على منصات التواصل الاجتماعي."},
]


def test_search_filters_docs_metadata_and_bad_values(settings, embedder, corpus):
    from rag.api import Index

    (corpus / "wire.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in WIRE) + "\n",
                                       encoding="utf-8")
    Index(settings, embedder).update([corpus])  # built in-process: the CLI reads it
    env = cli_env(settings)

    listed = {d["doc_id"]: d for d in json.loads(run_cli("docs", "--json", env=env).stdout)}
    assert (listed["wire/fine"]["outlet"], listed["wire/fine"]["date"]) == ("DW عربية", "2024-03-05")
    assert listed["000_4180ecd25a632971.txt"]["outlet"] is None
    human = run_cli("docs", env=env).stdout
    assert "    DW عربية · 2024-03-05 · https://news.example/de?a=1\n" in human

    hits = run_cli("search", "ما الغرامة التي فرضتها ألمانيا؟", "--k", "3", "--source", "bbc arabic",
                   "--source", "DW عربية,nope", "--since", "2024-01-01", "--until", "2024-12-31", env=env).stdout
    assert "(wire/fine " in hits and "   DW عربية · 2024-03-05 · https://news.example/de?a=1\n" in hits
    assert "(wire/riots " in hits and "000_" not in hits

    none = run_cli("search", "غرامة", "--since", "2025-01-01", env=env, check=False)
    assert none.returncode == 1 and "Traceback" not in none.stderr
    assert "no document in the index matches since 2025-01-01" in none.stderr
    assert "2 of 7 documents have a date, from 2024-03-05 to 2024-08-06" in none.stderr
    for flag, value in (("--since", "2024-13-01"), ("--until", "yesterday")):
        bad = run_cli("ask", "غرامة", flag, value, env=env, check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert f"argument {flag}: '{value}' is not a date: use YYYY-MM-DD" in bad.stderr
    swapped = run_cli("search", "غرامة", "--since", "2024-09-01", "--until", "2024-08-01", env=env, check=False)
    assert swapped.returncode == 1 and "is after until 2024-08-01" in swapped.stderr
    assert "articles without a date are left out" in run_cli("search", "--help", env=env).stdout
