"""EPUB ingestion on books built here with ebooklib."""

from pathlib import Path

import pytest
from ebooklib import epub

from megadoc.pipeline.ingest import IngestError, load_document


def _chapter(file_name: str, body: str) -> epub.EpubHtml:
    chapter = epub.EpubHtml(title=file_name, file_name=file_name, lang="en")
    chapter.content = f"<html><head><title>ignored</title></head><body>{body}</body></html>"
    return chapter


def _write_epub(path: Path, chapters: list[epub.EpubHtml], toc: tuple) -> Path:
    book = epub.EpubBook()
    book.set_identifier("megadoc-test")
    book.set_title("Moby-Dick; or, The Whale")
    book.set_language("en")
    for chapter in chapters:
        book.add_item(chapter)
    book.toc = toc
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    epub.write_epub(str(path), book)
    return path


def test_chapters_in_spine_order_named_by_the_toc(tmp_path):
    loomings = _chapter(
        "text/c1.xhtml",
        "<h1>Chapter 1. Loomings</h1><p>Call me Ishmael. Some years ago"
        "&mdash;never mind how long precisely.</p><p>First line<br/>second line</p>",
    )
    carpet_bag = _chapter(
        "text/c2.xhtml",
        "<h2>Chapter 2</h2><p>I stuffed a shirt or two into my old "
        "carpet-bag.</p><script>var hidden = 1;</script><style>p {}</style>",
    )
    continued = _chapter("text/c2-continued.xhtml", "<p>…and started for Cape Horn.</p>")
    untitled = _chapter("text/c3.xhtml", "<h1>The <em>Spouter</em>-Inn</h1><pre>  kept\n    as is</pre>")
    toc = (
        epub.Link("text/c1.xhtml", "Loomings", "c1"),
        (epub.Section("Part Two"), (epub.Link("text/c2.xhtml#start", "The Carpet-Bag", "c2"),)),
    )
    path = _write_epub(tmp_path / "moby.epub", [loomings, carpet_bag, continued, untitled], toc)

    doc = load_document(path)
    assert doc.kind == "epub" and doc.title == "Moby-Dick; or, The Whale"
    assert [s.chapter for s in doc.segments] == ["Loomings", "The Carpet-Bag", "The Carpet-Bag", "The Spouter-Inn"]
    assert doc.text.split("\n\n") == [
        "Chapter 1. Loomings",
        "Call me Ishmael. Some years ago—never mind how long precisely.",
        "First line\nsecond line",
        "Chapter 2",
        "I stuffed a shirt or two into my old carpet-bag.",
        "…and started for Cape Horn.",
        "The Spouter-Inn",
        "  kept\n    as is",
    ]  # the nav page, <head>, scripts and styles are not text
    ishmael = doc.text.index("Ishmael")
    assert doc.locate(ishmael, ishmael + 7) == "ch. 'Loomings'"


def test_epub_without_text(tmp_path):
    path = _write_epub(tmp_path / "pictures.epub", [_chapter("c1.xhtml", "<img src='a.png'/>")], ())
    with pytest.raises(IngestError) as error:
        load_document(path)
    message = str(error.value)
    assert "\n" not in message and "pictures.epub is empty: no text in any chapter" in message, message


def test_damaged_epub(tmp_path):
    path = tmp_path / "broken.epub"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(IngestError) as error:
        load_document(path)
    message = str(error.value)
    assert "\n" not in message and "broken.epub: cannot read this EPUB" in message, message
