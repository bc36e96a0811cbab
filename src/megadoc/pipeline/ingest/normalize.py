"""Normalization for what the model reads: hard line wraps inside paragraphs joined, line-end
hyphenation undone (PDFs), layout spaces collapsed; with exact offsets back to the original text.

The model was trained on books whose wraps were joined (megadoc.training.rows.clean_book); fed as
files come (a line break every ~70 characters) it reads a text unlike its training text and scores
about a bit per byte worse. So loaders normalize, and keep the map: a span of the normalized text
(a passage, a citation) maps back to the span of the original it came from, for line numbers and
for the document view, which shows the original.

The map is a list of pieces in order: either a run of characters kept as they are, or a stretch
of the original (whitespace, a hyphen and its line break) replaced by shorter text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, replace

from megadoc.pipeline.ingest.document import Document

# Whitespace holding line breaks, with the spaces around them: one break joins the lines (a wrap),
# two or more are a paragraph break.
_BREAK = r"[ \t\u00a0]*\n(?:[ \t\u00a0]*\n)*[ \t\u00a0]*"
# Layout spaces inside a line: tabs, no-break spaces and runs of spaces.
_SPACES = r"[\t\u00a0][ \t\u00a0]*| [ \t\u00a0]+"
# "infor-\nmation": a letter, a hyphen, a line break, a lower-case letter.
_HYPHEN_BREAK = r"(?<=[^\W\d_])-[ \t\u00a0]*\n[ \t\u00a0]*(?=[a-z])"
_PATTERN = re.compile(f"({_BREAK})|{_SPACES}")
_PATTERN_DEHYPHENATE = re.compile(f"(?P<hyphen>{_HYPHEN_BREAK})|({_BREAK})|{_SPACES}")


@dataclass(frozen=True)
class Normalized:
    """`text` (normalized) made from `original`, and the map between their offsets."""

    text: str
    original: str
    # Piece k starts at text[_starts[k]] and came from original[_sources[k]:_source_ends[k]]; a
    # kept piece has as many characters in both.
    _starts: list[int]
    _sources: list[int]
    _source_ends: list[int]
    _kept: list[bool]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original that the normalized span [start, end) came from."""
        start, end = max(0, min(start, len(self.text))), max(0, min(end, len(self.text)))
        if start >= end:
            return (self._original_offset(start),) * 2
        return self._original_offset(start), self._original_end(end)

    def from_original(self, start: int, end: int) -> tuple[int, int]:
        """The normalized span made from the original span [start, end) (empty if it was all
        whitespace that normalization dropped)."""
        return self._normalized_offset(start, at_end=False), self._normalized_offset(end, at_end=True)

    def _original_offset(self, offset: int) -> int:
        if offset >= len(self.text):
            return len(self.original)
        k = bisect_right(self._starts, offset) - 1
        return self._sources[k] + (offset - self._starts[k] if self._kept[k] else 0)

    def _original_end(self, end: int) -> int:
        k = bisect_right(self._starts, end - 1) - 1
        return self._sources[k] + (end - self._starts[k]) if self._kept[k] else self._source_ends[k]

    def _normalized_offset(self, offset: int, *, at_end: bool) -> int:
        k = bisect_right(self._sources, offset) - 1
        if k < 0:
            return 0
        if self._kept[k]:
            return self._starts[k] + min(offset - self._sources[k], self._source_ends[k] - self._sources[k])
        following = self._starts[k + 1] if k + 1 < len(self._starts) else len(self.text)
        # Inside a replaced stretch: a span starting there starts after it, one ending there ends before it.
        return self._starts[k] if at_end and offset < self._source_ends[k] else following


def normalize_text(text: str, *, dehyphenate: bool = False) -> Normalized:
    """Join the lines of each paragraph with one space (paragraphs are separated by blank lines and
    come out separated by exactly one), collapse layout spaces to one, drop leading and trailing
    whitespace; with `dehyphenate` (PDFs), "infor-\\nmation" becomes "information".

    The training corpus is built with this too: `normalize_text(book).text` is what the app reads."""
    pattern = _PATTERN_DEHYPHENATE if dehyphenate else _PATTERN
    parts: list[str] = []
    starts: list[int] = []
    sources: list[int] = []
    source_ends: list[int] = []
    kept: list[bool] = []
    length = 0
    done = 0

    def piece(source: int, source_end: int, replacement: str | None) -> None:
        nonlocal length
        starts.append(length)
        sources.append(source)
        source_ends.append(source_end)
        kept.append(replacement is None)
        out = text[source:source_end] if replacement is None else replacement
        parts.append(out)
        length += len(out)

    for match in pattern.finditer(text):
        begin, end = match.span()
        if begin > done:
            piece(done, begin, None)
        breaks = match.group(0).count("\n")
        if begin == 0 or end == len(text) or (dehyphenate and match.group("hyphen")):
            replacement = ""
        else:
            replacement = "\n\n" if breaks > 1 else " "
        if replacement != match.group(0):
            piece(begin, end, replacement)
        else:
            piece(begin, end, None)
        done = end
    if done < len(text):
        piece(done, len(text), None)
    return Normalized("".join(parts), text, starts, sources, source_ends, kept)


def normalize_document(document: Document, *, dehyphenate: bool = False) -> Document:
    """`document` with its text normalized (see normalize_text) and its segments moved onto the
    new text; `Document.origin` keeps the map back to the original."""
    normalized = normalize_text(document.text, dehyphenate=dehyphenate)
    segments = []
    for segment in document.segments:
        start, end = normalized.from_original(segment.start, segment.end)
        if start < end:
            segments.append(replace(segment, start=start, end=end))
    return replace(document, text=normalized.text, segments=segments, origin=normalized)
