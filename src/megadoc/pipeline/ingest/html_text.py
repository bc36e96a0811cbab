"""HTML/XHTML to plain text with the stdlib parser: paragraphs kept, scripts and styles dropped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HIDDEN = {"head", "script", "style", "template"}
_SPACES = re.compile(r"\s+")


def html_to_text(html: str) -> tuple[str, str | None]:
    """The text of an HTML document, paragraphs separated by blank lines, and its first heading."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    parser.end_block()
    return "\n\n".join(parser.paragraphs), parser.first_heading


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.first_heading: str | None = None
        self._pieces: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._pieces.append("\n")
        elif tag in _BLOCKS:
            self.end_block()
            self._pre += tag == "pre"
            self._in_heading = tag in _HEADINGS

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._pieces.append("\n")
        elif tag in _BLOCKS:
            self.end_block()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(self._hidden - 1, 0)
        elif tag in _BLOCKS:
            self.end_block()
            self._pre = max(self._pre - (tag == "pre"), 0)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._pieces.append(data if self._pre else _SPACES.sub(" ", data))

    def end_block(self) -> None:
        text = "".join(self._pieces)
        self._pieces = []
        if self._pre:
            text = text.strip("\n")
        else:
            text = "\n".join(line.strip() for line in text.split("\n")).strip()
        if text.strip():
            self.paragraphs.append(text)
            if self._in_heading and self.first_heading is None:
                self.first_heading = " ".join(text.split())
        self._in_heading = False
