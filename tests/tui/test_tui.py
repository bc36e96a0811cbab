"""`megadoc read`: the real Textual app driven with Pilot, on the tiny random-weight model.

Reading is real (a few hundred tokens on CPU), so each test keeps its document short; to act
"while reading" however fast the machine, a test holds the read at a progress report (ReadGate)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.worker import Worker

from megadoc.engine import GenerationConfig
from megadoc.pipeline.cache import StateCache
from megadoc.pipeline.session import ProgressCallback, Reader
from megadoc.tui.app import ReaderApp
from megadoc.tui.conversation import CitationLink, Exchange
from megadoc.tui.document_view import DocumentView
from megadoc.tui.question_input import QuestionInput
from megadoc.tui.status_bar import StatusBar
from tests.helpers import austen_paragraphs, write_pdf

SIZE = (100, 24)
TIMEOUT = 30


def short_book(path: Path, pages: int = 4, words: int = 40) -> Path:
    """A PDF of `pages` pages, each the start of a different paragraph of Persuasion."""
    return write_pdf(path, [" ".join(p.split()[:words]) for p in austen_paragraphs(pages)])


def reader_app(source: Path, model: Path | str, **options) -> ReaderApp:
    config = GenerationConfig(max_new_tokens=6)
    return ReaderApp(str(source), model=str(model), device="cpu", config=config, **options)


async def until(pilot: Pilot, condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


class ReadGate:
    """Stops the app's read at its first progress report of `after` tokens or more, until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()
        original = ReaderApp._progress_reporter

        def reporter(app: ReaderApp, worker: Worker) -> ProgressCallback:
            report = original(app, worker)

            def held(done: int, total: int) -> None:
                if done >= after and not self.opened.is_set():
                    self.reached.set()
                    self.opened.wait(TIMEOUT)
                report(done, total)

            return held

        monkeypatch.setattr(ReaderApp, "_progress_reporter", reporter)


class AnswerGate:
    """Holds each answer before it starts, until opened, so a test sees the app while it answers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()
        original = Reader.ask

        def held(reader: Reader, *args, **kwargs):
            self.reached.set()
            self.opened.wait(TIMEOUT)
            return original(reader, *args, **kwargs)

        monkeypatch.setattr(Reader, "ask", held)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def notifications(app: ReaderApp) -> list[str]:
    return [str(toast.render()) for toast in app.screen.query("Toast")]


def status_line(app: ReaderApp) -> str:
    return str(app.query_one(StatusBar).render())


def test_read_ask_while_reading_then_follow_the_citation_and_copy(app_env, tiny_model_dir, tmp_path, monkeypatch):
    book = short_book(tmp_path / "persuasion.pdf", pages=6)
    gate, answer_gate = ReadGate(monkeypatch, after=32), AnswerGate(monkeypatch)
    app = reader_app(book, tiny_model_dir)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, gate.reached.is_set, "the read to start")
            await pilot.click("#question")
            await pilot.press(*"What did the printer do to the paragraph?", "enter")
            [exchange] = app.query(Exchange)
            assert app.read is None and "Waiting" in str(exchange._answer.render())
            gate.opened.set()

            await until(pilot, answer_gate.reached.is_set, "the read, then the waiting question")
            assert app.read is not None and app.read.status == "read" and app.read.tokens_read > 0
            status = status_line(app)
            assert status.startswith("tiny · cpu · ") and f"{len(app.read.ids):,} tokens (read)" in status
            assert "· state " in status and status.endswith("answering")
            answer_gate.opened.set()

            await until(pilot, lambda: exchange.query(CitationLink), "the answer and its citations")
            assert exchange.answer.strip() and status_line(app).endswith("ready")
            link = exchange.query_one(CitationLink)
            assert link.citation.label == "p. 3"  # the only page with "printer" and "paragraph"
            view = app.query_one(DocumentView)
            assert view.scroll_y == 0
            await until(pilot, lambda: link.region.area, "the link to be laid out")
            await pilot.click(link)
            await pilot.pause()
            start, end = view.highlight  # the cited passage, from its first visible character
            assert link.citation.char_start <= start < end == link.citation.char_end
            assert not view.document.text[start].isspace()
            cited_line = view.layout_lines.line_at(start)
            assert 0 < view.scroll_y <= cited_line <= view.scroll_y + 1  # at the top, or below its page marker

            await pilot.press("escape", "c")
            assert app.clipboard == f"{exchange.answer.strip()}\nSources: p. 3"

    run(scenario)


def test_an_answer_shows_its_evidence_and_is_marked_when_not_in_the_document(
    app_env, tiny_model_dir, tmp_path, monkeypatch
):
    from megadoc.pipeline import session

    # The tiny model's answers are random: only its token stream is replaced by a known answer.
    monkeypatch.setattr(session, "stream_text", lambda *args, **kwargs: iter(["Napoleon Bonaparte."]))
    book = short_book(tmp_path / "persuasion.pdf", pages=6)
    app = reader_app(book, tiny_model_dir)

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.read is not None, "the read")
            await pilot.click("#question")
            await pilot.press(*"What did the printer do to the paragraph?", "enter")
            [exchange] = app.query(Exchange)
            await until(pilot, lambda: exchange.query(".evidence"), "the answer and its evidence")
            note = str(exchange.query_one(".unsupported").render())
            assert note.startswith("not found in the document") and "napoleon" in note
            quote = exchange.query_one(".evidence").query_one(CitationLink)
            assert quote.citation.label == "p. 3" and "paragraph" in str(quote.render())
            await until(pilot, lambda: quote.region.area, "the quote to be laid out")
            await pilot.click(quote)
            await pilot.pause()
            view = app.query_one(DocumentView)
            start, end = view.highlight
            assert quote.citation.char_start <= start < end == quote.citation.char_end
            assert "paragraph" in view.document.text[start:end]

    run(scenario)


def test_quitting_during_a_read_keeps_a_checkpoint_and_the_next_open_resumes(
    app_env, tiny_model_dir, tmp_path, monkeypatch
):
    book = short_book(tmp_path / "long.pdf", pages=6, words=60)
    gate = ReadGate(monkeypatch, after=64)
    first = reader_app(book, tiny_model_dir)

    async def quit_while_reading() -> None:
        async with first.run_test(size=SIZE) as pilot:
            await until(pilot, gate.reached.is_set, "some chunks to be read")
            await pilot.press("q")
            assert "saving what was read" in status_line(first)
            gate.opened.set()
            await until(pilot, lambda: first.return_code is not None, "the app to exit")
        assert first.read is None and first.failure.startswith("reading stopped")

    run(quit_while_reading)
    [entry] = StateCache(app_env).entries()
    assert not entry.complete and 64 <= entry.position < entry.metadata["tokens_total"]

    second = reader_app(book, tiny_model_dir)

    async def resume() -> None:
        async with second.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: second.read is not None, "the resumed read")
            read = second.read
            assert read.status == "resumed" and read.tokens_read == len(read.ids) // 16 * 16 - entry.position
            assert "tokens (resumed)" in status_line(second)

    run(resume)
    [entry] = StateCache(app_env).entries()
    assert entry.complete


def test_search_and_go_to_page_work_before_any_model(app_env, tmp_path):
    """The document shows as soon as it is loaded; a missing model is a notification, not a crash."""
    book = short_book(tmp_path / "pages.pdf", pages=6)
    app = reader_app(book, "no-such-model")

    async def scenario() -> None:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            view = app.query_one(DocumentView)
            await until(pilot, lambda: app.failure is not None, "the model error")
            assert "no-such-model" in app.failure and status_line(app).endswith("failed")
            await until(pilot, lambda: any("no-such-model" in text for text in notifications(app)), "a toast")

            await pilot.press("g", "4", "enter")
            page_four = view.layout_lines.lines[round(view.scroll_y)]
            assert page_four.marker and page_four.text == "── p. 4 ──"
            assert app.focused is view

            await pilot.press("slash", *"elliot", "enter")
            start, end = view.highlight
            assert app.query_one(DocumentView).document.text[start:end] == "Elliot"
            await pilot.press("enter")  # the next match
            assert view.highlight[0] > start

            await pilot.press("escape", "a", *"Who?", "enter")
            [exchange] = app.query(Exchange)
            assert "Cannot answer" in str(exchange._answer.render())

    run(scenario)


def test_a_missing_file_is_a_notification_and_question_history_walks(app_env, tmp_path):
    app = reader_app(tmp_path / "missing.pdf", "no-such-model")

    async def scenario() -> None:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.failure is not None, "the file error")
            await until(pilot, lambda: any("no such file" in text for text in notifications(app)), "a toast")
            box = app.query_one(QuestionInput)
            await pilot.press("a", *"first", "enter", *"second", "enter", *"draft")
            await pilot.press("up")
            assert box.value == "second"
            await pilot.press("up", "up")
            assert box.value == "first"
            await pilot.press("down", "down")
            assert box.value == ""
            await pilot.press("ctrl+c")
            await until(pilot, lambda: app.return_code is not None, "ctrl+c to quit")

    run(scenario)


def test_main_screen_snapshot(app_env, tiny_model_dir, tmp_path, snap_compare):
    """A cached document (so no progress bar, no timings, no model output) with a search hit."""
    book = short_book(tmp_path / "persuasion.pdf", pages=3)
    filling = reader_app(book, tiny_model_dir)

    async def fill_the_cache() -> None:
        async with filling.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: filling.read is not None, "the first read")

    run(fill_the_cache)

    async def ready(pilot: Pilot) -> None:
        await until(pilot, lambda: pilot.app.read is not None, "the cached read")
        await pilot.press("slash", *"elliot", "enter", "escape")

    assert snap_compare(reader_app(book, tiny_model_dir), terminal_size=SIZE, run_before=ready)


def test_a_failure_while_answering_is_a_notification_and_the_next_question_is_answered(
    app_env, tiny_model_dir, tmp_path, monkeypatch
):
    from megadoc.pipeline.session import Reader

    book = short_book(tmp_path / "persuasion.pdf", pages=2)
    app = reader_app(book, tiny_model_dir)
    real_ask = Reader.ask
    failures = iter([RuntimeError("CUDA error: device-side assert triggered\nsecond line")])

    def ask_failing_once(self, *args, **kwargs):  # a fault injected into the real pipeline, once
        error = next(failures, None)
        if error is not None:
            raise error
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(Reader, "ask", ask_failing_once)

    async def scenario() -> None:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.read is not None, "the read")
            await pilot.click("#question")
            await pilot.press(*"Who?", "enter")
            [failed] = app.query(Exchange)
            await until(pilot, lambda: "Cannot answer" in str(failed._answer.render()), "the failure note")
            assert "device-side assert triggered" in str(failed._answer.render())
            assert any("Answering failed" in (n.title or "") for n in app._notifications)
            await pilot.press(*"Who else?", "enter")
            second = list(app.query(Exchange))[-1]
            await until(pilot, lambda: not app._answering, "the second answer")
            assert "Cannot answer" not in str(second._answer.render()) and status_line(app).endswith("ready")

    run(scenario)
