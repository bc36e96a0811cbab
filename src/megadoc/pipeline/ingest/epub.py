"""EPUB via ebooklib: spine documents in reading order, a Segment per document named by the TOC."""

from __future__ import annotations

import io
import posixpath
from urllib.parse import unquote, urldefrag

from ebooklib import epub

from megadoc.display import one_line
from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, empty_error, source_label
from megadoc.pipeline.ingest.html_text import html_to_text


def load_epub(data: bytes, source: str) -> Document:
    name = source_label(source)
    # ebooklib and the zip/XML layers beneath it raise many exception types on broken books.
    try:
        book = epub.read_epub(io.BytesIO(data))
        titles = _toc_titles(book.toc)
        items = [book.get_item_with_id(idref) for idref, _linear in book.spine]
        chapters = [
            (item.get_name(), item.get_content().decode("utf-8", errors="replace"))
            for item in items
            if isinstance(item, epub.EpubHtml) and not isinstance(item, epub.EpubNav)
        ]
        metadata_title = book.get_metadata("DC", "title")
    except Exception as error:  # see above
        raise IngestError(f"{name}: cannot read this EPUB ({one_line(error)})") from error

    builder = DocumentBuilder("\n\n")
    chapter = None
    for file_name, html in chapters:
        text, heading = html_to_text(html)
        # A book split into several files per chapter lists only the first in its TOC.
        chapter = titles.get(_normalize(file_name)) or heading or chapter
        builder.add(text, chapter=chapter)
    if builder.is_empty:
        raise empty_error(source, "no text in any chapter of this EPUB")
    title = (metadata_title[0][0] or "").strip() if metadata_title else ""
    return builder.build(source=source, kind="epub", title=title or None)


def _toc_titles(toc: list) -> dict[str, str]:
    """The first TOC title pointing into each content file, in TOC order (sections flattened)."""
    titles: dict[str, str] = {}
    for entry in toc:
        if isinstance(entry, tuple):  # (Section, children)
            section, children = entry
            _remember(titles, getattr(section, "href", ""), section.title)
            for path, title in _toc_titles(children).items():
                titles.setdefault(path, title)
        else:
            _remember(titles, entry.href, entry.title)
    return titles


def _remember(titles: dict[str, str], href: str | None, title: str | None) -> None:
    if href and title and title.strip():
        titles.setdefault(_normalize(urldefrag(href).url), " ".join(title.split()))


def _normalize(path: str) -> str:
    return posixpath.normpath(unquote(path))
