"""The bottom lines: a progress bar while the document is first read (tokens/s, time left), and a
status bar (model, device, tokens read, state size, what the app is doing)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, ProgressBar

from megadoc.display import byte_size
from megadoc.pipeline.progress import Speedometer, clock


class ReadProgress(Horizontal):
    """Tokens read of the total, tokens/s and time left. Speed counts from the first report, so a
    resumed read's earlier tokens do not inflate it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._speed = Speedometer()

    def compose(self) -> ComposeResult:
        yield Label("Reading", id="read-title")
        yield ProgressBar(show_eta=False, id="read-bar")
        yield Label("", id="read-numbers")

    def update(self, done: int, total: int) -> None:
        self._speed.update(done)
        self.query_one(ProgressBar).update(total=total, progress=done)
        numbers = f"{done:,}/{total:,} tokens"
        left = self._speed.left(done, total)
        if left is not None:
            numbers += f"  {self._speed.speed:,.0f} tok/s  ETA {clock(left)}"
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
