"""The ingested document: its text, and where every span of it came from."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megadoc.pipeline.ingest.normalize import Normalized


class IngestError(Exception):
    """A document that cannot be read; str() is one line naming the file, fit to show a user."""


def empty_error(source: str, why: str | None = None) -> IngestError:
    """The one error of every document without text (an empty file, captions whose cues have no
    text, a scanned PDF, ...): "NAME is empty", and why where it is not plain."""
    return IngestError(f"{source_label(source)} is empty" + (f": {why}" if why else ""))


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous span [start, end) of Document.text and what is known of its origin."""

    start: int
    end: int
    page: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    speaker: str | None = None
    chapter: str | None = None


@dataclass
class Document:
    """Text plus sorted, non-overlapping segments; text between segments (separators) has no origin.

    `text` is what the model reads; where the loader normalized it, `origin` maps its spans back to
    the original text (`source_text`), which line numbers count and the document view shows."""

    text: str
    segments: list[Segment]
    source: str
    kind: str
    title: str | None = None
    warnings: list[str] = field(default_factory=list)
    origin: Normalized | None = None

    def __post_init__(self) -> None:
        previous_end = 0
        for segment in self.segments:
            if not previous_end <= segment.start < segment.end <= len(self.text):
                raise ValueError(f"segment {segment} is empty, out of order or outside the text")
            previous_end = segment.end

    def segment_at(self, offset: int) -> Segment | None:
        """The segment holding the character at `offset`, or None (a separator, or out of range)."""
        i = bisect_right(self.segments, offset, key=lambda s: s.start) - 1
        if i >= 0 and offset < self.segments[i].end:
            return self.segments[i]
        return None

    def locate(self, start: int, end: int) -> str:
        """A short human label for the span [start, end): pages, else times, else speakers or chapters."""
        covered = self._overlapping(start, max(end, start + 1))
        if not covered:
            return ""
        pages = [s.page for s in covered if s.page is not None]
        if pages:
            first, last = min(pages), max(pages)
            return f"p. {first}" if first == last else f"pp. {first}-{last}"
        timed = [s for s in covered if s.start_time is not None]
        if timed:
            label = _clock(timed[0].start_time)
            if len(timed) > 1:
                label += "-" + _clock(timed[-1].end_time or timed[-1].start_time)
            speaker = timed[0].speaker
            if speaker and all(s.speaker == speaker for s in timed):
                label += f" ({speaker})"
            return label
        speakers = _unique(s.speaker for s in covered)
        if speakers:
            others = f" and {len(speakers) - 3} others" if len(speakers) > 3 else ""
            return ", ".join(speakers[:3]) + others
        chapters = _unique(s.chapter for s in covered)
        if not chapters:
            return ""
        if len(chapters) == 1:
            return f"ch. '{chapters[0]}'"
        return f"ch. '{chapters[0]}' to '{chapters[-1]}'"

    @property
    def source_text(self) -> str:
        """The text as the file had it (before normalization)."""
        return self.text if self.origin is None else self.origin.original

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of `source_text` that the span [start, end) of `text` came from."""
        return (start, end) if self.origin is None else self.origin.to_original(start, end)

    def source_view(self) -> Document:
        """The document as the file had it: `source_text` with the segments on it (for display)."""
        if self.origin is None:
            return self
        segments = [replace(s, start=a, end=b) for s in self.segments for a, b in [self.source_span(s.start, s.end)]]
        return replace(self, text=self.origin.original, segments=segments, origin=None)

    def content_hash(self) -> str:
        """sha256 hex digest of the text; the state cache keys on it."""
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()

    def _overlapping(self, start: int, end: int) -> list[Segment]:
        i = max(bisect_right(self.segments, start, key=lambda s: s.start) - 1, 0)
        found = []
        while i < len(self.segments) and self.segments[i].start < end:
            if self.segments[i].end > start:
                found.append(self.segments[i])
            i += 1
        return found


class DocumentBuilder:
    """Joins pieces of text with a separator, recording one Segment per piece."""

    def __init__(self, separator: str) -> None:
        self._separator = separator
        self._parts: list[str] = []
        self._segments: list[Segment] = []
        self._length = 0

    def add(self, text: str, *, separator: str | None = None, **origin: object) -> None:
        """Append `text` (skipped when empty) as a Segment with the given origin fields."""
        if not text:
            return
        if self._parts:
            joint = self._separator if separator is None else separator
            self._parts.append(joint)
            self._length += len(joint)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        self._segments.append(Segment(start, self._length, **origin))

    @property
    def is_empty(self) -> bool:
        return not self._parts

    def build(self, *, source: str, kind: str, title: str | None = None, warnings: list[str] | None = None) -> Document:
        return Document("".join(self._parts), self._segments, source, kind, title, warnings or [])


def source_label(source: str) -> str:
    """How error messages and warnings name a source."""
    return "stdin" if source == "-" else source


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))
