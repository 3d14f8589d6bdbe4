"""Search and answer filters (dates, outlets, ids) on a real index: seeds without metadata, plus
news records and a page that state their outlet and date."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from rag.api import Index
from rag.errors import FilterError
from rag.filters import parse_filters
from rag.retrieval import Retriever
from rag.types import Filters

from .conftest import SEEDS, run_coroutine

FINE = ("ألمانيا تغرم منصة فيديو بسبب خطاب الكراهية\n"
        "فرضت هيئة تنظيم الإعلام الألمانية غرامة قدرها سبعة ملايين يورو على منصة بث مرئي لأنها تأخرت "
        "في حذف منشورات تحرض على الكراهية. وقالت الهيئة إن المنصة تلقت مئات البلاغات.\n"
        "وأضافت أن قانون إنفاذ الشبكات يلزم المنصات بحذف المحتوى المخالف خلال أربع وعشرين ساعة.")
RIOTS = ("الشرطة البريطانية تعتقل عشرات بعد أعمال شغب\n"
         "اعتقلت الشرطة البريطانية عشرات الأشخاص بعد أعمال شغب اندلعت في عدة مدن عقب منشورات مضللة "
         "انتشرت على منصات التواصل الاجتماعي. وقال رئيس الوزراء إن الكراهية عبر الإنترنت تهدد المجتمع.")
CALL = ("قادة العالم يجتمعون في باريس لمكافحة التطرف على الإنترنت\n"
        "اجتمع قادة دول وشركات تكنولوجيا في باريس لإطلاق نداء كرايست تشيرش بعد الهجوم على مسجدين في "
        "نيوزيلندا. وتعهدت الشركات بإزالة المحتوى الإرهابي بسرعة أكبر.")
UNDATED = ("منصة إكس تحذف آلاف الحسابات\n"
           "أعلنت منصة إكس أنها حذفت آلاف الحسابات التي نشرت خطاب كراهية خلال شهر واحد، وفق تقرير الشفافية.")
PAGE = f"""<html><head><meta property="og:title" content="فيسبوك يمول منظمات لمكافحة التطرف">
<meta property="og:site_name" content="Sky News عربية">
<meta property="article:published_time" content="2016-01-18T12:00:00Z">
<link rel="canonical" href="https://news.example/facebook?id=1"></head>
<body><p>{"أطلقت شركة فيسبوك مبادرة لتمويل منظمات أهلية تحارب التطرف وخطاب الكراهية على الإنترنت في بريطانيا."}</p>
</body></html>"""
RECORDS = [
    {"id": "wire/de-fine", "text": FINE, "source": {"name": "DW عربية"}, "publishedAt": "2024-03-05T09:30:00Z",
     "link": "https://news.example/de"},
    {"id": "wire/uk-riots", "text": RIOTS, "outlet": "BBC Arabic", "date": "2024-08-06",
     "url": "https://news.example/uk"},
    {"id": "wire/paris-call", "text": CALL, "publisher": "BBC Arabic", "published": "2019-05-15"},
    {"id": "wire/x-accounts", "text": UNDATED, "outlet": "Al Jazeera", "date": "2024-13-01"},  # no usable date
]


@pytest.fixture(scope="module")
def news_index(base_settings, embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("news")
    corpus = root / "corpus"
    shutil.copytree(SEEDS, corpus / "seeds")
    (corpus / "wire.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n",
                                       encoding="utf-8")
    (corpus / "pages").mkdir()
    (corpus / "pages" / "facebook.html").write_text(PAGE, encoding="utf-8")
    index = Index(base_settings.replace(home=root / "home", index_dir=root / "index"), embedder=embedder)
    index.update([corpus])
    return index


HATE = "ما الإجراءات التي اتخذت ضد خطاب الكراهية على الإنترنت؟"
DATED = {"wire/de-fine": "2024-03-05", "wire/uk-riots": "2024-08-06", "wire/paris-call": "2019-05-15",
         "pages/facebook.html": "2016-01-18"}


def docs(passages) -> set[str]:
    return {p.doc_id for p in passages}


def test_metadata_is_stored_and_listed(news_index):
    listed = {d.doc_id: (d.outlet, d.date, d.url) for d in news_index.documents()}
    assert listed["wire/de-fine"] == ("DW عربية", "2024-03-05T09:30:00Z", "https://news.example/de")
    assert listed["wire/x-accounts"] == ("Al Jazeera", None, None)
    assert listed["pages/facebook.html"] == ("Sky News عربية", "2016-01-18T12:00:00Z",
                                             "https://news.example/facebook?id=1")
    assert listed["seeds/000_4180ecd25a632971.txt"] == (None, None, None)


def test_dates_select_documents_and_undated_ones_are_left_out(news_index):
    hits = news_index.search(HATE, k=10, since="2024-01-01")
    assert docs(hits) == {"wire/de-fine", "wire/uk-riots"}
    hits = news_index.search(HATE, k=10, until=dt.date(2019, 12, 31))
    assert docs(hits) == {"wire/paris-call", "pages/facebook.html"}
    hits = news_index.search(HATE, k=10, since="2019-05-15", until="2024-03-05")  # both ends inclusive
    assert docs(hits) == {"wire/paris-call", "wire/de-fine"}
    for mode in ("hybrid", "dense", "bm25"):
        assert docs(news_index.search(HATE, k=10, since="2000-01-01", mode=mode)) <= set(DATED), mode


def test_sources_match_outlets_in_any_case_ids_and_folders(news_index):
    assert docs(news_index.search(HATE, k=10, sources="bbc arabic")) == {"wire/uk-riots", "wire/paris-call"}
    assert docs(news_index.search(HATE, k=10, sources=["dw عربية", "Al Jazeera"])) == {
        "wire/de-fine", "wire/x-accounts"}
    assert docs(news_index.search(HATE, k=10, sources="pages/facebook.html,wire/uk-riots")) == {
        "pages/facebook.html", "wire/uk-riots"}
    seeds = docs(news_index.search(HATE, k=10, sources="seeds/"))
    assert seeds and all(d.startswith("seeds/") for d in seeds)
    assert docs(news_index.search(HATE, k=10, sources="BBC Arabic", since="2024-01-01")) == {"wire/uk-riots"}


def test_a_selective_filter_still_returns_k_passages(news_index):
    """FAISS searches the allowed vectors only: not the unfiltered top-k, filtered afterwards."""
    article = "seeds/000_4180ecd25a632971.txt"
    unfiltered = news_index.search("What did Facebook fund in Britain?", k=5, mode="dense")
    assert article not in docs(unfiltered)
    hits = news_index.search("What did Facebook fund in Britain?", k=3, mode="dense", sources=article)
    assert len(hits) == 3 and docs(hits) == {article}


def test_a_filter_that_lets_everything_through_changes_nothing(news_index):
    everything = [d.doc_id for d in news_index.documents()]
    for question in (HATE, "ماذا قال ماسك عن الحرب الأهلية؟", "What did Musk say about civil war?"):
        for mode in ("hybrid", "dense", "bm25"):
            plain = news_index.search(question, k=5, mode=mode)
            filtered = news_index.search(question, k=5, mode=mode, sources=everything)
            assert [(p.doc_id, p.start, p.end, p.score) for p in filtered] == \
                   [(p.doc_id, p.start, p.end, p.score) for p in plain], (question, mode)


def test_a_passage_scores_the_same_inside_a_filter(news_index):
    """The relevance baseline comes from the whole index, so a filter cannot make weak evidence
    look strong (or the reverse)."""
    plain = {(p.doc_id, p.start): p.score for p in news_index.search(HATE, k=10)}
    for passage in news_index.search(HATE, k=3, sources="BBC Arabic"):
        if (passage.doc_id, passage.start) in plain:
            assert passage.score == pytest.approx(plain[passage.doc_id, passage.start], abs=1e-4)


def test_passages_and_answers_carry_the_metadata(news_index):
    (hit,) = news_index.search(HATE, k=1, sources="wire/uk-riots")
    assert (hit.outlet, hit.date, hit.url) == ("BBC Arabic", "2024-08-06", "https://news.example/uk")
    answer = news_index.ask("لماذا اعتقلت الشرطة البريطانية عشرات الأشخاص؟", sources="BBC Arabic",
                            model="extractive")
    assert not answer.refused and answer.citations
    assert {c.doc_id for c in answer.citations} <= {"wire/uk-riots", "wire/paris-call"}
    view = answer.sources()[0]
    assert view.outlet == "BBC Arabic" and view.date in ("2024-08-06", "2019-05-15")


def test_answers_use_only_the_filtered_articles(news_index):
    question = "ماذا قال ماسك عن الحرب الأهلية؟"
    assert "seeds/000_4180ecd25a632971.txt" in {c.doc_id for c in news_index.ask(question).citations}
    filtered = news_index.ask(question, since="2024-01-01")
    assert {p.doc_id for p in filtered.passages} <= {"wire/de-fine", "wire/uk-riots"}

    async def stream() -> set[str]:
        answer = await news_index.astream(question, sources="Al Jazeera").answer()
        return {p.doc_id for p in answer.passages}

    assert run_coroutine(stream()) == {"wire/x-accounts"}


def test_a_filter_that_matches_nothing_says_what_the_index_holds(news_index):
    with pytest.raises(FilterError) as caught:
        news_index.search(HATE, since="2030-01-01")
    message = str(caught.value)
    assert "since 2030-01-01" in message and "4 of 10 documents have a date, from 2016-01-18 to 2024-08-06" in message
    with pytest.raises(FilterError) as caught:
        news_index.ask(HATE, sources="The Guardian")
    assert "'The Guardian'" in str(caught.value) and "'BBC Arabic'" in str(caught.value)
    stream = news_index.astream(HATE, since="2030-01-01", until="2030-02-01", sources="x")
    with pytest.raises(FilterError, match="until 2030-02-01, source 'x'"):
        run_coroutine(stream.answer())
    with pytest.raises(FilterError):  # a bad value fails at once, before any work in the background
        news_index.astream(HATE, since="2030-02-30")


@pytest.mark.parametrize("kwargs, words", [
    ({"since": "2024-13-01"}, "since: '2024-13-01' is not a date: use YYYY-MM-DD"),
    ({"until": "01/08/2024"}, "until: '01/08/2024' is not a date: use YYYY-MM-DD"),
    ({"since": "2024-09-01", "until": "2024-08-01"}, "since 2024-09-01 is after until 2024-08-01"),
])
def test_bad_filter_values_are_errors_that_say_what_to_write(news_index, kwargs, words):
    with pytest.raises(FilterError) as caught:
        news_index.search(HATE, **kwargs)
    assert words in str(caught.value)


def test_parse_filters():
    assert not parse_filters() and not parse_filters("", " ", [])
    assert parse_filters("2024-01-01", None, ["BBC, DW", " ", "BBC"]) == Filters(
        since=dt.date(2024, 1, 1), sources=("BBC", "DW"))
    only = Filters(sources=("news",))
    assert only.matches("news/a.txt", None, None) and only.matches("NEWS", None, None)
    assert not only.matches("newsletter.txt", None, None)
    assert Filters(sources=("feed.jsonl",)).matches("feed.jsonl#3", None, None)
    recent = Filters(since=dt.date(2024, 1, 1))
    assert recent.matches("a", None, "2024-01-01T00:30:00+03:00") and not recent.matches("a", None, "2023-12-31")
    assert not recent.matches("a", None, None) and not recent.matches("a", None, "August 2024")


def test_a_retriever_with_filters_searches_the_store_once_per_query(news_index, monkeypatch):
    retriever = Retriever(news_index.store, news_index.embedder, parse_filters(sources="BBC Arabic"))
    calls = []
    real = news_index.store.document_metadata
    monkeypatch.setattr(news_index.store, "document_metadata", lambda: calls.append(1) or real())
    for _ in range(3):
        retriever.search(HATE, k=2)
    assert calls == []  # resolved once, when the retriever was made
