"""`megadoc read FILE`: the document on the left, a conversation about it on the right.

Loading, reading and answering run in thread workers (torch blocks) that post messages back
(megadoc.tui.messages); the UI thread only lays out and draws. Quitting during the first read
cancels it between chunks: the pipeline saves what was read, and the next open resumes there.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input
from textual.worker import Worker, get_current_worker

from megadoc.display import one_line
from megadoc.engine import CheckpointError, GenerationConfig
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache
from megadoc.pipeline.ingest import IngestError, load_document
from megadoc.pipeline.registry import ModelError
from megadoc.pipeline.session import ProgressCallback, ReadDocument, Reader, ReadInterrupted
from megadoc.tui.conversation import CitationLink, Conversation, Exchange
from megadoc.tui.document_view import DocumentView
from megadoc.tui.messages import (
    AnswerDone,
    AnswerFailed,
    AnswerPiece,
    DocumentLoaded,
    ModelLoaded,
    OpenFailed,
    ReadFinished,
    ReadProgressed,
    ReadStopped,
    Warned,
)
from megadoc.tui.question_input import QuestionInput
from megadoc.tui.status_bar import ReadProgress, StatusBar

# Progress reports reach the UI at most this often (a small model reads thousands of chunks a second).
PROGRESS_INTERVAL = 0.1
OPEN_ERRORS = (IngestError, ModelError, CheckpointError, OSError)


class ReaderApp(App[None]):
    CSS_PATH = "reader.tcss"
    TITLE = "megadoc"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("a", "ask", "Ask"),
        Binding("slash", "prompt('search')", "Search"),
        Binding("g", "prompt('go to')", "Go to page"),
        Binding("c", "copy", "Copy answer"),
        Binding("escape", "leave", "Document"),
    ]

    def __init__(
        self,
        source: str,
        *,
        model: str = registry.DEFAULT_MODEL,
        device: str = "auto",
        config: GenerationConfig | None = None,
        recall: bool = True,
        password: str | None = None,
        use_cache: bool = True,
    ) -> None:
        super().__init__()
        self.source, self.model_name, self.device_choice = source, model, device
        self.config = config or GenerationConfig()
        self.recall, self.password, self.use_cache = recall, password, use_cache
        self.reader: Reader | None = None
        self.read: ReadDocument | None = None
        self.failure: str | None = None
        self._read_worker: Worker | None = None
        self._quitting = False
        self._queue: deque[tuple[Exchange, str]] = deque()
        self._answering = False
        self.progress: tuple[int, int] = (0, 0)  # tokens read so far, of the total
        self._prompt_mode = "search"

    def compose(self) -> ComposeResult:
        with Horizontal(id="panes"):
            with Vertical(id="document-pane"):
                yield DocumentView(id="document")
                yield Input(id="prompt")
            with Vertical(id="conversation-pane"):
                yield Conversation(id="conversation")
                yield QuestionInput(id="question")
        yield ReadProgress(id="progress")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#document-pane").border_title = Path(self.source).name
        self.query_one("#conversation-pane").border_title = "Conversation"
        self.query_one(DocumentView).focus()
        self._read_worker = self.open_document()

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def reading(self) -> bool:
        """The open worker is loading or reading (not yet finished, stopped or failed)."""
        return self.read is None and self.failure is None and self._read_worker is not None

    # -- workers (threads) -----------------------------------------------------------------------

    @work(thread=True, group="read")
    def open_document(self) -> None:
        worker = get_current_worker()
        try:
            document = load_document(self.source, password=self.password)
            self.post_message(DocumentLoaded(document))
            cache = StateCache() if self.use_cache else None
            device = registry.choose_device(self.device_choice)
            loaded = registry.load(self.model_name, device, None if cache is None else cache.fingerprints_file)
            self.post_message(ModelLoaded(loaded.directory.name, str(loaded.model.device)))
            self.reader = Reader(loaded, cache, warn=lambda text: self.post_message(Warned(text)))
            if worker.is_cancelled:
                raise KeyboardInterrupt
            read = self.reader.read(document, self._progress_reporter(worker))
        except ReadInterrupted as stop:
            self.post_message(ReadStopped(stop.tokens_saved))
        except KeyboardInterrupt:
            self.post_message(ReadStopped(0))
        except OPEN_ERRORS as error:
            self.post_message(OpenFailed(one_line(error)))
        else:
            self.post_message(ReadFinished(read))

    def _progress_reporter(self, worker: Worker) -> ProgressCallback:
        """Reports progress, and stops the read when the worker is cancelled: the pipeline treats
        KeyboardInterrupt from its callback as Ctrl-C, saving what was read."""
        last = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last
            if worker.is_cancelled:
                raise KeyboardInterrupt
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or done == total:
                last = now
                self.post_message(ReadProgressed(done, total))

        return report

    @work(thread=True, group="answer")
    def answer(self, exchange: Exchange, question: str) -> None:
        assert self.reader is not None and self.read is not None
        worker = get_current_worker()
        try:
            response = self.reader.ask(self.read, question, self.config, recall=self.recall)
            for piece in response:
                if worker.is_cancelled:
                    return
                self.post_message(AnswerPiece(exchange, piece))
        except Exception as error:  # noqa: BLE001 - any failure of one answer is shown, never a crash
            self.post_message(AnswerFailed(exchange, one_line(error)))
            return
        self.post_message(AnswerDone(exchange, response.grounding))

    # -- what the workers report -----------------------------------------------------------------

    def on_document_loaded(self, message: DocumentLoaded) -> None:
        document = message.document
        self.query_one("#document-pane").border_title = document.title or Path(self.source).name
        self.query_one(DocumentView).show(document.source_view())
        self.status.phase = "loading model"
        for text in document.warnings:
            self.notify(text, severity="warning")

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.status.model, self.status.device = message.name, message.device
        self.status.phase = "reading"

    def on_read_progressed(self, message: ReadProgressed) -> None:
        progress = self.query_one(ReadProgress)
        progress.display = True
        progress.update(message.done, message.total)
        self.progress = (message.done, message.total)
        self.status.tokens = f"{message.done:,}/{message.total:,} tokens read"

    def on_read_finished(self, message: ReadFinished) -> None:
        self.read = read = message.read
        self.query_one(ReadProgress).display = False
        self.status.tokens = f"{len(read.ids):,} tokens ({read.status})"
        self.status.state_size = read.state.nbytes
        self.status.phase = "ready"
        if self._quitting:
            self.exit()
            return
        self._answer_next()

    def on_read_stopped(self, message: ReadStopped) -> None:
        self.failure = f"reading stopped; {message.tokens_saved:,} tokens are saved"
        self.exit()

    def on_open_failed(self, message: OpenFailed) -> None:
        self.failure = message.error
        self.query_one(ReadProgress).display = False
        self.status.phase = "failed"
        self.notify(message.error, title="Cannot open the document", severity="error", timeout=30)
        while self._queue:
            self._queue.popleft()[0].note(f"Cannot answer: {message.error}")
        if self._quitting:
            self.exit()

    def on_warned(self, message: Warned) -> None:
        self.notify(message.text, severity="warning")

    def on_answer_piece(self, message: AnswerPiece) -> None:
        message.exchange.append(message.piece)
        self.query_one(Conversation).scroll_end(animate=False)

    def on_answer_done(self, message: AnswerDone) -> None:
        message.exchange.finish(message.grounding)
        self.query_one(Conversation).scroll_end(animate=False)
        self._answering = False
        self.status.phase = "ready"
        self._answer_next()

    def on_answer_failed(self, message: AnswerFailed) -> None:
        message.exchange.note(f"Cannot answer: {message.error}")
        self.notify(message.error, title="Answering failed", severity="error", timeout=30)
        self._answering = False
        self.status.phase = "ready"
        self._answer_next()

    # -- the user --------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if isinstance(event.input, QuestionInput):
            self._ask(event.input, event.value.strip())
        elif event.input.id == "prompt":
            self._prompt_submitted(event.value.strip())

    def _ask(self, box: QuestionInput, question: str) -> None:
        if not question:
            return
        box.remember(question)
        box.value = ""
        exchange = self.query_one(Conversation).start(question)
        if self.failure is not None:
            exchange.note(f"Cannot answer: {self.failure}")
            return
        if self.read is None:
            done, total = self.progress
            exchange.note(f"Waiting: the document is still being read ({100 * done // max(total, 1)}% so far)…")
        self._queue.append((exchange, question))
        self._answer_next()

    def _answer_next(self) -> None:
        """Answers one question at a time, in the order asked, once the document is read."""
        if self.read is None or self._answering or not self._queue:
            return
        exchange, question = self._queue.popleft()
        self._answering = True
        exchange.note("…")
        self.status.phase = "answering"
        self.answer(exchange, question)

    def on_citation_link_selected(self, message: CitationLink.Selected) -> None:
        citation = message.citation
        self.query_one(DocumentView).reveal(citation.char_start, citation.char_end)

    def action_ask(self) -> None:
        self.query_one(QuestionInput).focus()

    def action_prompt(self, mode: str) -> None:
        self._prompt_mode = mode
        prompt = self.query_one("#prompt", Input)
        prompt.placeholder = "Search for…" if mode == "search" else "Go to page, time (mm:ss) or line…"
        prompt.value = ""
        prompt.display = True
        prompt.focus()

    def _prompt_submitted(self, text: str) -> None:
        view = self.query_one(DocumentView)
        if self._prompt_mode == "search":
            if not view.find(text):
                self.notify(f"{text!r} is not in the document", severity="warning")
            return  # the prompt stays open: Enter again finds the next match
        if view.go_to(text):
            self.action_leave()
        else:
            self.notify(f"No page, time or line {text!r} here", severity="warning")

    def action_leave(self) -> None:
        self.query_one("#prompt", Input).display = False
        self.query_one(DocumentView).focus()

    def action_copy(self) -> None:
        focused = self.focused
        answered = [e for e in self.query_one(Conversation).exchanges if e.answer]
        exchange = focused if isinstance(focused, Exchange) and focused.answer else (answered or [None])[-1]
        if exchange is None:
            self.notify("No answer to copy yet")
            return
        sources = "; ".join(c.label for c in exchange.citations)
        self.copy_to_clipboard(exchange.answer.strip() + (f"\nSources: {sources}" if sources else ""))
        self.notify("Answer copied")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide keys that an input box would take as text (Textual hides most, not `/`), and Escape
        where it has nothing to leave."""
        if action == "prompt":
            return not isinstance(self.focused, Input)
        if action == "leave":
            return not isinstance(self.focused, DocumentView)
        return True

    async def action_quit(self) -> None:
        """While reading, stop the read first (it saves a checkpoint, then the app exits); a second
        quit does not wait."""
        if self.reading and not self._quitting and self._read_worker is not None:
            self._quitting = True
            self._read_worker.cancel()
            self.status.phase = "stopping: saving what was read…"
            return
        self.exit()
