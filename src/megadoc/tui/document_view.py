"""The document pane: the whole text, wrapped, with page/time markers; search and "go to".

Line API (a ScrollView drawing only the visible lines), so a book of a million characters costs
one wrap per width, not a widget per paragraph."""

from __future__ import annotations

import re

from rich.segment import Segment
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from megadoc.pipeline.ingest import Document
from megadoc.tui.layout import Layout, Line
from megadoc.tui.places import offset_of


class DocumentView(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"document-view--marker", "document-view--highlight"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.document: Document | None = None
        self.layout_lines: Layout | None = None
        self.highlight: tuple[int, int] | None = None  # a character span: search hit or citation

    def show(self, document: Document) -> None:
        self.document = document
        self._lay_out()

    def on_resize(self, event: Resize) -> None:
        if self.document is None or self.layout_lines is None:
            return
        lines = self.layout_lines.lines
        top = lines[min(round(self.scroll_y), len(lines) - 1)] if lines else None
        self._lay_out()
        if top is not None:
            line = self.layout_lines.first_line_from(top.start) if top.marker else self.layout_lines.line_at(top.start)
            self.scroll_to(y=line, animate=False)

    def _text_width(self) -> int:
        return self.scrollable_content_region.width or self.size.width

    def _lay_out(self) -> None:
        assert self.document is not None
        width = self._text_width()
        self.layout_lines = Layout(self.document, width)
        self.virtual_size = Size(width, len(self.layout_lines.lines))
        self.refresh()

    def _top_offset(self) -> int:
        lines = self.layout_lines.lines if self.layout_lines else []
        return lines[min(round(self.scroll_y), len(lines) - 1)].start if lines else 0

    def render_line(self, y: int) -> Strip:
        width = self._text_width()
        index = self.scroll_offset.y + y
        if self.layout_lines is None or index >= len(self.layout_lines.lines):
            return Strip.blank(width, self.rich_style)
        line = self.layout_lines.lines[index]
        return Strip(self._segments(line)).extend_cell_length(width, self.rich_style).crop(0, width)

    def _segments(self, line: Line) -> list[Segment]:
        base = self.rich_style
        if line.marker:
            return [Segment(line.text, base + self.get_component_rich_style("document-view--marker"))]
        if self.highlight is None:
            return [Segment(line.text, base)]
        start, end = (min(max(i - line.start, 0), len(line.text)) for i in self.highlight)
        marked = base + self.get_component_rich_style("document-view--highlight")
        pieces = [(line.text[:start], base), (line.text[start:end], marked), (line.text[end:], base)]
        return [Segment(text, style) for text, style in pieces if text]

    # -- moving around ---------------------------------------------------------------------------

    def reveal(self, start: int, end: int) -> None:
        """Highlight the characters [start, end) and scroll their first line to the top (below
        the marker naming their page, when they start a page)."""
        if self.document is not None:  # a passage may begin on the blank line before its page
            text = self.document.text
            while start < end - 1 and text[start].isspace():
                start += 1
        self.highlight = (start, end)
        if self.layout_lines is not None:
            line = self.layout_lines.line_at(start)
            if line > 0 and self.layout_lines.lines[line - 1].marker:
                line -= 1
            self.scroll_to(y=line, animate=False)
        self.refresh()

    def go_to(self, where: str) -> bool:
        """Scroll to a page, time or line (see places.offset_of); False when there is none."""
        offset = None if self.document is None else offset_of(self.document, where)
        if offset is None or self.layout_lines is None:
            return False
        self.highlight = None
        self.scroll_to(y=self.layout_lines.first_line_from(offset), animate=False)
        self.refresh()
        return True

    def find(self, text: str) -> bool:
        """Reveal the next occurrence of `text` (any case) after the current hit or the top line,
        wrapping around to the start; False when there is none."""
        if self.document is None or not text:
            return False
        pattern = re.compile(re.escape(text), re.IGNORECASE)
        after = self.highlight[0] + 1 if self.highlight else self._top_offset()
        found = pattern.search(self.document.text, after) or pattern.search(self.document.text)
        if found is None:
            return False
        self.reveal(found.start(), found.end())
        return True
