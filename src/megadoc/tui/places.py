"""Where "go to" goes: a page number, a time ([hh:]mm:ss) or a line number, as a character offset."""

from __future__ import annotations

from megadoc.pipeline.ingest import Document


def offset_of(document: Document, where: str) -> int | None:
    """The first character of page N (paged documents), of the first cue at or after a time
    (timed ones), or of line N (others); None when there is no such place."""
    where = where.strip().removeprefix("p.").removeprefix("p").strip()
    if ":" in where:
        seconds = _seconds(where)
        timed = [s for s in document.segments if s.start_time is not None]
        if seconds is None or not timed:
            return None
        return next((s.start for s in timed if s.start_time >= seconds), timed[-1].start)
    if not where.isdigit():
        return None
    number = int(where)
    if any(s.page is not None for s in document.segments):
        return next((s.start for s in document.segments if s.page == number), None)
    return _line_start(document.text, number)


def _seconds(clock: str) -> float | None:
    parts = clock.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds)


def _line_start(text: str, number: int) -> int | None:
    if number < 1:
        return None
    offset = 0
    for _ in range(number - 1):
        offset = text.find("\n", offset) + 1
        if offset == 0:
            return None
    return offset
