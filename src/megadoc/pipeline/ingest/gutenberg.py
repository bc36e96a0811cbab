"""Project Gutenberg's licence header and footer: where a Gutenberg text's book begins and ends.

Training reads the books without them (`strip_gutenberg`), and so does the app (`book_spans`, used by
the text loader through normalization, which keeps the offsets of the original): a question asked
right after the ~18 KB licence at a file's end would otherwise follow text the model never trained
on, and recall would quote the licence.
"""

from __future__ import annotations

import re

# "*** START OF THIS PROJECT GUTENBERG EBOOK TITLE ***"; long titles wrap onto a second line.
_START = re.compile(
    r"^\*{3} ?START OF (?:THE|THIS) PROJECT GUTENBERG"
    r"(?:[^\n]*\*{3}[ \t]*$|[^\n]*\n[^\n]*\*{3}[ \t]*$|[^\n]*$)",
    re.M | re.I,
)
# Older files end their header with the legal "small print" instead.
_OLD_HEADER_END = re.compile(
    r"^\*+ ?END\*? ?THE SMALL PRINT[^\n]*$|^\*+ *SMALL PRINT! FOR __ COMPLETE SHAKESPEARE[^\n]*$", re.M
)
_FOOTER = re.compile(
    r"^(?:\*{3} ?END OF (?:THE|THIS) PROJECT GUTENBERG|(?:The )?End of (?:the |this )?Project Gutenb[eu]rg"
    r"|End Project Gutenberg|End of this Etext of)",
    re.M | re.I,
)
# The World Library copyright notice repeated through the early Shakespeare files.
_SHAKESPEARE_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS.*?>>\n*", re.S)
# A leading paragraph of transcriber credits or notes about the Project Gutenberg edition.
_CREDITS = re.compile(
    r"\A(?:Produced|E-?text prepared|Prepared|Transcribed|This e-?text)\b"
    r"|gutenberg|e-?text|proofreading team|small print",
    re.I,
)


def _header_end(text: str) -> int | None:
    start = _START.search(text)
    if start is None:
        # Only the first half: some modern files repeat the small print after their footer.
        start = _OLD_HEADER_END.search(text, 0, len(text) // 2)
    return start.end() if start else None


def has_gutenberg_header(text: str) -> bool:
    return _header_end(text) is not None


def book_spans(text: str) -> list[tuple[int, int]]:
    """The spans of `text` that hold the book, in order: after the licence header (if any), before
    the footer, without the World Library notices, surrounding whitespace or leading transcriber
    credits."""
    begin = _header_end(text) or 0
    footer = _FOOTER.search(text, begin)
    end = footer.start() if footer else len(text)
    spans, cursor = [], begin
    for notice in _SHAKESPEARE_NOTICE.finditer(text, begin, end):
        spans.append((cursor, notice.start()))
        cursor = notice.end()
    spans.append((cursor, end))
    body = "".join(text[a:b] for a, b in spans)
    low, high = len(body) - len(body.lstrip()), len(body.rstrip())
    while True:
        paragraph, blank, rest = body[low:high].partition("\n\n")
        if not blank or not _CREDITS.search(paragraph):
            break
        low = high - len(rest.lstrip())
    return _original_spans(spans, low, high)


def _original_spans(spans: list[tuple[int, int]], low: int, high: int) -> list[tuple[int, int]]:
    """The pieces of `spans` (in text offsets) that hold characters [low, high) of their concatenation."""
    kept, offset = [], 0
    for a, b in spans:
        start, end = max(a, a + low - offset), min(b, a + high - offset)
        if start < end:
            kept.append((start, end))
        offset += b - a
    return kept


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg text, without licence header, footer or credits."""
    return "".join(text[a:b] for a, b in book_spans(text))
