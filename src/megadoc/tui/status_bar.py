"""The bottom lines: a progress bar while the document is first read (tokens/s, time left), and a
status bar (model, device, tokens read, state size, what the app is doing)."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, ProgressBar

from megadoc.display import byte_size


def duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ReadProgress(Horizontal):
    """Tokens read of the total, tokens/s and time left. Speed counts from the first report, so a
    resumed read's earlier tokens do not inflate it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._first: tuple[float, int] | None = None

    def compose(self) -> ComposeResult:
        yield Label("Reading", id="read-title")
        yield ProgressBar(show_eta=False, id="read-bar")
        yield Label("", id="read-numbers")

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        self.query_one(ProgressBar).update(total=total, progress=done)
        started, begin = self._first
        speed = (done - begin) / (now - started) if now > started and done > begin else 0.0
        numbers = f"{done:,}/{total:,} tokens"
        if speed:
            numbers += f"  {speed:,.0f} tok/s  ETA {duration((total - done) / speed)}"
        self.query_one("#read-numbers", Label).update(numbers)


class StatusBar(Widget):
    """One line: `tiny · cpu · 4,372 tokens (cached) · state 89.3 KiB · ready`."""

    model: reactive[str] = reactive("")
    device: reactive[str] = reactive("")
    tokens: reactive[str] = reactive("")
    state_size: reactive[int] = reactive(0)
    phase: reactive[str] = reactive("opening")

    def render(self) -> Content:
        parts = [self.model or "loading model", self.device, self.tokens]
        if self.state_size:
            parts.append(f"state {byte_size(self.state_size)}")
        parts.append(self.phase)
        return Content(" · ".join(p for p in parts if p))
