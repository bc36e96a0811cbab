"""Progress on stderr: a bar with the count done, its rate and time left on a terminal; elsewhere
(a log, a pipe) a plain line every half minute, so a long read is never silent."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text


class Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="progress.data.speed")


# Between plain progress lines when stderr is not a terminal.
LINE_SECONDS = 30.0


class Speedometer:
    """Speed and time left of a count, measured from the first report (so a resumed read's
    earlier tokens do not inflate it)."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self.speed = 0.0

    def update(self, done: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._first is None:
            self._first = (now, done)
        started, begin = self._first
        self.speed = (done - begin) / (now - started) if now > started and done > begin else 0.0

    def left(self, done: int, total: int) -> float | None:
        """Seconds left at the speed so far, or None before there is a speed."""
        return (total - done) / self.speed if self.speed else None


def rate(speed: float) -> str:
    """`2,410`, `12`, `3.4`, `0.046`: two significant digits below ten, so a slow count is not `0`."""
    return f"{speed:,.0f}" if speed >= 10 else f"{speed:.2g}"


def clock(seconds: float) -> str:
    """`0:03:07`"""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressBar:
    """Use as `with ProgressBar(console, "book.pdf") as bar: reader.read(doc, bar.update)`; `unit`
    names what is counted (tokens, examples). Where each unit is itself a read (an eval's examples),
    `bar.read` takes the reads' own progress and the bar shows their speed in tokens/s too.

    The bar is transient (it disappears when done) and drawn only when stderr is a terminal."""

    def __init__(self, console: Console, label: str, unit: str = "tokens", line_seconds: float = LINE_SECONDS) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn(f"{{task.completed:,.0f}}/{{task.total:,.0f}} {unit}"),
            Rate("tok" if unit == "tokens" else unit),
            TextColumn("{task.fields[reading]}", style="progress.data.speed"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._label, self._unit, self._console = label, unit, console
        self._task: TaskID | None = None
        self._speed = Speedometer()
        self._reading = Speedometer()  # tokens read, summed over reads (`read`)
        self._read_before, self._read_last = 0, 0
        self._line_seconds = line_seconds
        self._last_line = time.monotonic()

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, done: int, total: int) -> None:
        # The task starts at the first report, so a resumed read's earlier tokens do not count as speed.
        if self._task is None:
            self._task = self._progress.add_task(self._label, total=total, completed=done, reading="")
        else:
            self._progress.update(self._task, completed=done, total=total)
        now = time.monotonic()
        self._speed.update(done, now)
        if not self._console.is_terminal and done < total and now - self._last_line >= self._line_seconds:
            self._last_line = now
            self._console.print(self.line(done, total), style="dim")

    def read(self, done: int, total: int) -> None:
        """A read's progress (`done` of its `total` tokens) inside the count: a read that starts
        again from fewer tokens is the next one."""
        if done < self._read_last:
            self._read_before += self._read_last
        self._read_last = done
        self._reading.update(self._read_before + done)
        if self._task is not None and self._reading.speed:
            self._progress.update(self._task, reading=f"{self._reading.speed:,.0f} tok/s read")

    def line(self, done: int, total: int) -> str:
        """`book.txt: 12,288/110,000 tokens, 420 tokens/s, 0:03:53 left`; an eval's examples add
        their reading speed: `examples: 3/589 examples, 0.2 examples/s, 0:49:46 left, 2,410 tokens/s read`"""
        text = f"{self._label}: {done:,}/{total:,} {self._unit}"
        left = self._speed.left(done, total)
        if left is not None:
            text += f", {rate(self._speed.speed)} {self._unit}/s, {clock(left)} left"
        if self._reading.speed:
            text += f", {self._reading.speed:,.0f} tokens/s read"
        return text
