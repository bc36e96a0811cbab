"""The question box: Enter asks, Up/Down walk through the questions asked before."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class QuestionInput(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "Previous question", show=False),
        Binding("down", "history(1)", "Next question", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="Ask about the document…", id=id)
        self.history: list[str] = []
        self._position = 0  # len(history): the draft being typed

    def remember(self, question: str) -> None:
        if not self.history or self.history[-1] != question:
            self.history.append(question)
        self._position = len(self.history)

    def action_history(self, step: int) -> None:
        position = min(max(self._position + step, 0), len(self.history))
        if position == self._position:
            return
        self._position = position
        self.value = self.history[position] if position < len(self.history) else ""
        self.cursor_position = len(self.value)
