"""The document as screen lines: its text wrapped to a width, with a marker line where a page,
chapter or minute begins. Every line knows the character offset it starts at, so a citation or a
search hit (character spans of Document.text) maps to a line to scroll to."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from megadoc.pipeline.ingest import Document, Segment

# Timed documents (captions) get a marker at most once a minute, not one per cue.
TIME_MARKER_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Line:
    """`text` starts at character `start` of the document; a marker line names where it is."""

    text: str
    start: int
    marker: bool = False


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def markers(document: Document) -> list[tuple[int, str]]:
    """(offset, label) where the label of the place changes: pages, else minutes, else chapters."""
    found: list[tuple[int, str]] = []
    last_time = -float(TIME_MARKER_SECONDS)
    for segment in document.segments:
        label = _label(segment, last_time)
        if label is None or (found and found[-1][1] == label):
            continue
        if segment.page is None and segment.start_time is not None:
            last_time = segment.start_time
        found.append((segment.start, label))
    return found


def _label(segment: Segment, last_time: float) -> str | None:
    if segment.page is not None:
        return f"p. {segment.page}"
    if segment.start_time is not None:
        return clock(segment.start_time) if segment.start_time >= last_time + TIME_MARKER_SECONDS else None
    return segment.chapter


class Layout:
    """The whole document as lines of at most `width` characters (words are not split unless
    longer than a line), and lookups from character offsets to lines."""

    def __init__(self, document: Document, width: int) -> None:
        width = max(width, 8)
        self.lines: list[Line] = []
        position = 0
        text = document.text
        for offset, label in markers(document):
            self.lines.extend(_paragraph_lines(text, position, offset, width))
            self.lines.append(Line(f"── {label} ──", offset, marker=True))
            position = offset
        self.lines.extend(_paragraph_lines(text, position, len(text), width))
        self._starts = [line.start for line in self.lines]

    def line_at(self, offset: int) -> int:
        """The text line holding character `offset` (markers share their offset with the text after them)."""
        return max(bisect_right(self._starts, offset) - 1, 0)

    def first_line_from(self, offset: int) -> int:
        """The first line starting at or after `offset`: a marker, when one begins there."""
        return min(bisect_left(self._starts, offset), max(len(self.lines) - 1, 0))


def _paragraph_lines(text: str, begin: int, end: int, width: int) -> Iterator[Line]:
    """Lines of text[begin:end]: one or more per source line; a trailing newline adds none."""
    while begin < end:
        newline = text.find("\n", begin, end)
        stop = end if newline < 0 else newline
        yield from _wrap(text, begin, stop, width)
        begin = stop + 1


def _wrap(text: str, begin: int, end: int, width: int) -> Iterator[Line]:
    if begin == end:
        yield Line("", begin)
        return
    while begin < end:
        if end - begin <= width:
            yield Line(text[begin:end].replace("\t", " "), begin)
            return
        cut = text.rfind(" ", begin, begin + width + 1)
        following = cut + 1
        if cut <= begin:
            cut = following = begin + width
        yield Line(text[begin:cut].replace("\t", " "), begin)
        begin = following
