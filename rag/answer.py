"""Question → verified, cited answer. Orchestration only: the pieces live in their own modules.

Flow (`generate`): resolve the turn against the conversation when it depends on it → hybrid
retrieval → refusal when the best passage's calibrated relevance is below the threshold (no LLM
is called) → extractive answer (`quotes`), or an LLM answer streamed and then verified
(`verify`); an LLM failure falls back to the extractive answer. Citations are renumbered 1..n
in order of first appearance before the answer is handed out.

`AnswerStream` is what callers get: iterate it for the text as it is produced, then call
`.answer()` for the final `Answer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from .conversation import resolve
from .coverage import mentions, missing_terms, term, uncovered_terms
from .errors import LLMError
from .llm import LLM, failure_notice
from .prompts import build_messages, condense_messages, echoes_prompt, question_language, refusal_text, text
from .quotes import comparison_sides, extractive_answer, side_query, summary_topic, task_of
from .reader import Reader
from .retrieval import Retrieval, Retriever
from .types import Answer, Citation, Fact, Passage
from .verify import renumber, verify

REFUSAL_THRESHOLD = 0.2  # on Passage.score; measured in docs/answers.md


class AnswerStream:
    """An answer in the making. Iterating yields its text pieces as they are produced (a second
    iteration replays them); `answer()` finishes the work and returns the verified `Answer`,
    whose text can differ from the streamed one when verification changed it."""

    def __init__(self, produce: Generator[str, None, Answer]) -> None:
        self._produce = produce
        self._pieces: list[str] = []
        self._answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        if self._answer is not None:
            yield from self._pieces
            return
        while True:
            try:
                piece = next(self._produce)
            except StopIteration as done:
                self._answer = done.value
                return
            self._pieces.append(piece)
            yield piece

    def answer(self) -> Answer:
        if self._answer is None:
            for _ in self:
                pass
        assert self._answer is not None
        return self._answer

    def text(self) -> str:
        """The final answer text (waits for it)."""
        return self.answer().answer


class AsyncAnswerStream:
    """`AnswerStream` for event loops: the work runs in a worker thread; `async for` yields the
    pieces as they come, `await stream.answer()` gives the final `Answer`."""

    def __init__(self, start: Callable[[], AnswerStream]) -> None:
        self._start = start
        self._answer: Answer | None = None
        self._pieces: list[str] = []
        self._started = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        if self._started:
            for piece in self._pieces:
                yield piece
            return
        self._started = True
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                stream = self._start()
                for piece in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
                loop.call_soon_threadsafe(queue.put_nowait, stream.answer())
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        while (item := await queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Answer):
                self._answer = item
                continue
            self._pieces.append(item)
            yield item
        await worker

    async def answer(self) -> Answer:
        if self._answer is None:
            async for _ in self:
                pass
        assert self._answer is not None
        return self._answer


def stream_answer(question: str, **options: Any) -> AnswerStream:
    return AnswerStream(generate(question, **options))


SUMMARY_K = 8  # a summary looks at more passages, to reach every article that speaks to it
SIDE_K = 3


def generate(question: str, *, retriever: Retriever, k: int, llm: LLM | None, reader: Reader | None = None,
             history: Sequence[Any] | None = None, context_tokens: int = 6000,
             refusal_threshold: float = REFUSAL_THRESHOLD) -> Generator[str, None, Answer]:
    """Yield answer text as it is produced; return the final, verified Answer."""
    began = time.perf_counter()
    timings: dict[str, float] = {}
    lang = question_language(question)
    history = list(history or [])
    notice = notice_detail = None
    fell_back = False

    t = time.perf_counter()
    task = task_of(question)
    depth = max(k, SUMMARY_K) if task == "summary" else k
    retrieval = retriever.retrieve(summary_topic(question) if task == "summary" else question, k=depth)
    turn = resolve(question, history, weak_on_its_own=_weak(retrieval, refusal_threshold))
    if turn.depends and llm is not None:
        try:
            rewritten = llm.complete(condense_messages(question, history)).strip()
            turn = replace(turn, query=rewritten or turn.query, reader_query=rewritten or turn.reader_query)
        except LLMError as exc:
            llm, fell_back = None, True
            notice, notice_detail = failure_notice(exc, lang), exc.detail
    if turn.depends:
        retrieval = retriever.retrieve(turn.query, k=depth, prefer=turn.prefer_docs)
        if turn.subject:
            retrieval = _about(turn.subject, retrieval, lambda: retriever.retrieve(turn.subject, k=depth))
    timings["retrieval_ms"] = _ms(t)
    passages = retrieval.passages
    mode = "llm" if llm is not None else "extractive"
    model = llm.model if llm is not None else None
    uncovered: list[str] = []

    def finish(answer_text: str, citations: list[Citation], used: Sequence[Passage], refused: bool = False,
               unverified: bool = False, fact: Fact | None = None, removed: tuple[int, int] = (0, 0)) -> Answer:
        numbered = renumber(answer_text, citations, list(used), fact)
        timings["total_ms"] = _ms(began)
        return Answer(question=question, answer=numbered.text, citations=numbered.citations,
                      passages=numbered.passages, refused=refused, mode=mode, model=model, fell_back=fell_back,
                      notice=notice, notice_detail=notice_detail, unverified=unverified,
                      timings_ms={k: round(v, 1) for k, v in timings.items()},
                      fact=numbered.fact, uncovered=tuple(uncovered), task=task,
                      standalone_question=turn.query if turn.depends else None,
                      removed_quotes=removed[0], removed_markers=removed[1])

    sides = comparison_sides(question) if task == "comparison" else None
    side_cache: dict[str, tuple[Retrieval, bool]] = {}

    def side(query: str, name: str) -> tuple[Retrieval, bool]:
        if query not in side_cache:
            found = retriever.retrieve(query, k=SIDE_K)
            side_cache[query] = found, (not _weak(found, refusal_threshold)
                                        and not missing_terms([term(name)], found.evidence))
        return side_cache[query]

    weak = _weak(retrieval, refusal_threshold)
    if weak and sides is not None:
        # a comparison is refused only when neither side is found: "compare Germany and Brazil" is
        # half answerable even when the question as a whole matches no passage well
        found = [side(side_query(sides, name), name) for name in sides.names]
        if any(covered for _, covered in found):
            retrieval, weak = _merged(retrieval, [r for r, _ in found]), False
            passages = retrieval.passages
    if weak:
        mode, model = "refusal", None
        refusal = refusal_text(question, passages)
        yield refusal
        return finish(refusal, [], passages, refused=True)

    if task != "comparison":
        uncovered = uncovered_terms(turn.reader_query, retrieval.evidence)

    if llm is not None:
        messages, n_used = build_messages(turn.reader_query, passages, context_tokens, task=task,
                                          uncovered=uncovered)
        used = passages[:n_used]
        t = time.perf_counter()
        produced: list[str] = []
        try:
            for piece in llm.stream(messages):
                if not produced:
                    timings["first_token_ms"] = _ms(began)
                produced.append(piece)
                yield piece
        except LLMError as exc:
            mode, model, fell_back = "extractive", None, True
            notice, notice_detail = failure_notice(exc, lang), exc.detail
        else:
            timings["generation_ms"] = _ms(t)
        if mode == "llm" and echoes_prompt("".join(produced), messages):
            mode, fell_back = "extractive", True
            notice = text(lang, "echo", model=model)
            model = None
        elif mode == "llm":
            t = time.perf_counter()
            checked = verify("".join(produced), retrieval.evidence[:n_used], embed=retriever.embedder.embed_query)
            timings["verification_ms"] = _ms(t)
            notes = []
            if checked.removed_quotes:
                notes.append(text(lang, "removed", n=checked.removed_quotes))
            if not checked.citations:
                notes.append(text(lang, "unverified"))
            notice = " ".join(notes) or None
            return finish(checked.text, checked.citations, used, unverified=not checked.citations,
                          removed=(checked.removed_quotes, checked.removed_markers))

    t = time.perf_counter()

    def side_noting_gaps(query: str, name: str) -> tuple[Retrieval, bool]:
        found, covered = side(query, name)
        if not covered:
            uncovered.append(name)
        return found, covered

    extract = extractive_answer(turn.reader_query, retrieval, reader=reader, side_retrieval=side_noting_gaps,
                                relevance=refusal_threshold)
    answer_text = extract.text
    if uncovered and task != "comparison":
        answer_text += "\n\n" + text(lang, "uncovered", terms=text(lang, "list_sep").join(uncovered))
    timings["extraction_ms"] = _ms(t)
    final = finish(answer_text, extract.citations, extract.passages, unverified=not extract.citations,
                   fact=extract.fact)
    yield from _pieces(final.answer)
    return final


def _merged(whole: Retrieval, parts: Sequence[Retrieval]) -> Retrieval:
    """The passages of several retrievals in one list (each chunk once), with the whole question's
    query state (vector, terms)."""
    seen: set[int] = set()
    passages, evidence = [], []
    for part in parts:
        for passage, item in zip(part.passages, part.evidence):
            if passage.chunk_id not in seen:
                seen.add(passage.chunk_id)
                passages.append(passage)
                evidence.append(item)
    return replace(whole, passages=passages, evidence=evidence)


def _about(subject: str, retrieval: Retrieval, by_name: Callable[[], Retrieval]) -> Retrieval:
    """For a follow-up that names something new ("وماذا عن بيتر كايل؟"): the passages that mention
    it, from the follow-up's retrieval and from one for the name alone, read with the follow-up's
    query. The earlier topic's words pull in passages about the earlier subject, and beside them the
    new one's passages can score too low to be answered. When no passage mentions it, the retrieval
    as it was (the answer then says it is not covered)."""
    def mentioning(found: Retrieval) -> Retrieval:
        kept = [i for i, item in enumerate(found.evidence)
                if mentions(item.passage.title + "\n" + item.passage.text, subject)]
        return replace(found, passages=[found.passages[i] for i in kept], evidence=[found.evidence[i] for i in kept])

    # a passage both find keeps the score for the name alone: the one the refusal threshold can judge
    merged = _merged(retrieval, [mentioning(by_name()), mentioning(retrieval)])
    return merged if merged.passages else retrieval


def _weak(retrieval: Retrieval, refusal_threshold: float) -> bool:
    return not retrieval.passages or max(p.score for p in retrieval.passages) < refusal_threshold


def _pieces(answer_text: str) -> Iterator[str]:
    parts = answer_text.split("\n\n")
    for i, part in enumerate(parts):
        yield part + ("\n\n" if i < len(parts) - 1 else "")


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
