"""The conversation pane: each question with its answer as it streams in, and the answer's
citations as links that take the document to the cited place."""

from __future__ import annotations

import re

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from megadoc.pipeline.recall import Citation
from megadoc.pipeline.session import Grounding

# Control characters (a model can emit any byte) would garble the terminal; newlines stay.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f]")


class CitationLink(Static, can_focus=True):
    """`[p. 12]`: click it (or Enter on it) to show that place in the document."""

    BINDINGS = [Binding("enter", "select", "Show in document")]

    class Selected(Message):
        def __init__(self, citation: Citation) -> None:
            super().__init__()
            self.citation = citation

    def __init__(self, citation: Citation, *, quote: bool = False) -> None:
        text = f"{citation.label}: \u201c{citation.excerpt}\u201d" if quote else citation.label
        super().__init__(Content(_CONTROL.sub("", text)), classes="quote" if quote else "citation")
        self.citation = citation
        self.tooltip = None if quote else citation.excerpt

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.action_select()

    def action_select(self) -> None:
        self.post_message(self.Selected(self.citation))


class Exchange(Vertical, can_focus=True):
    """One question and its answer. Focus it to copy its answer."""

    def __init__(self, question: str) -> None:
        # Children made here, not in compose, so notes and pieces can arrive before mounting ends.
        self._answer = Static(Content(""), classes="answer")
        self._citations = Horizontal(classes="citations")
        super().__init__(Static(Content(question), classes="question"), self._answer, self._citations)
        self.question = question
        self.answer = ""
        self.citations: list[Citation] = []
        self.grounding = Grounding()

    def note(self, text: str) -> None:
        """A line in place of the answer (waiting, failed) until its text starts arriving."""
        self._answer.update(Content(text))
        self._answer.add_class("note")

    def append(self, piece: str) -> None:
        if not self.answer:
            piece = piece.lstrip()
        self.answer += piece
        self._answer.remove_class("note")
        self._answer.update(Content(_CONTROL.sub("", self.answer)))

    def finish(self, grounding: Grounding) -> None:
        """Below the answer: its sources as links, the support check's note when it is not
        supported, and the evidence (recalled passages quoted, each a link to its place)."""
        self.citations = grounding.citations
        self.grounding = grounding
        if not self.answer.strip():
            self.note("(no answer)")
        if grounding.citations:
            links = (CitationLink(c) for c in grounding.citations)
            self._citations.mount(Static("Sources:", classes="sources-label"), *links)
        note = grounding.support.note if grounding.support is not None else None
        if note:
            self.mount(Static(Content(note), classes="unsupported"))
        if grounding.evidence:
            self.mount(Vertical(*(CitationLink(q, quote=True) for q in grounding.evidence), classes="evidence"))


class Conversation(VerticalScroll):
    """The exchanges so far; opens with a hint on what to do."""

    def compose(self) -> ComposeResult:
        yield Static(Content("Ask a question below (press a). Answers cite pages: click one to see it."), id="hint")

    def start(self, question: str) -> Exchange:
        exchange = Exchange(question)
        self.mount(exchange)
        self.scroll_end(animate=False)
        return exchange

    @property
    def exchanges(self) -> list[Exchange]:
        return list(self.query(Exchange))
