"""Plain text and Markdown: encodings, damaged bytes, newlines, headings as chapters."""

import codecs
import gzip
from pathlib import Path

import pytest

from megadoc.pipeline.ingest import IngestError, load_document
from tests.helpers import SHARED_DATA

FRENCH = (
    "Il était une fois, dans un château près de la forêt, un garçon nommé René qui rêvait d'être "
    "pêcheur. Chaque matin, il descendait à la rivière où l'eau claire coulait sous le pont de "
    "pierre. Son père, un vieil homme très sévère, lui répétait qu'il devait étudier.\n"
)
BOOKS = SHARED_DATA / "books"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_one_line(error: pytest.ExceptionInfo, path: Path, phrase: str) -> None:
    message = str(error.value)
    assert "\n" not in message and path.name in message and phrase in message, message


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le"])
def test_encodings_are_detected(tmp_path, encoding):
    text = FRENCH + ("Guillemets “ainsi” – et l’euro €.\n" if encoding in ("cp1252", "utf-16") else "")
    doc = load_document(_write(tmp_path, "story.txt", text.encode(encoding)))
    assert doc.kind == "text" and doc.warnings == []
    assert doc.source_text == text  # no BOM, no mojibake


def test_invalid_utf8_bytes_are_replaced_with_a_warning(tmp_path):
    data = FRENCH.encode() + b"broken \xff\xfe here and a cut sequence \xc3.\n" + FRENCH.encode()
    doc = load_document(_write(tmp_path, "damaged.txt", data))
    assert doc.source_text.startswith(FRENCH) and doc.source_text.endswith(FRENCH)  # not decoded as Latin-1
    assert "broken \ufffd\ufffd here" in doc.text
    assert len(doc.warnings) == 1 and "damaged.txt" in doc.warnings[0] and "U+FFFD" in doc.warnings[0]


def test_newlines_are_normalized_and_one_segment_covers_the_text(tmp_path):
    doc = load_document(_write(tmp_path, "notes.txt", b"one\r\ntwo\rthree\n"))
    assert doc.source_text == "one\ntwo\nthree\n"
    assert doc.text == "one two three"  # the model reads the wrapped lines joined
    assert [(s.start, s.end) for s in doc.segments] == [(0, len(doc.text))]
    assert doc.locate(0, 3) == ""


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n  ", codecs.BOM_UTF8 + b"\n"])
def test_empty_file(tmp_path, data):
    path = _write(tmp_path, "nothing.txt", data)
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "nothing.txt is empty")


@pytest.mark.parametrize("data", [b"\x00\x01\x02\x03ELF\x00\x00\x00" * 200, bytes(range(256)) * 40])
def test_binary_data_is_refused(tmp_path, data):
    path = _write(tmp_path, "program.txt", data)
    with pytest.raises(IngestError) as error:
        load_document(path)
    _assert_one_line(error, path, "looks like binary data, not text")


def test_markdown_sections_are_chapters(tmp_path):
    source = (
        "Preface without a heading.\n\n"
        "# Moby-Dick\n\n"
        "## Loomings\n\nCall me Ishmael.\n\n"
        "```bash\n# not a heading, a comment in code\n```\n\n"
        "The Carpet-Bag\n--------------\n\nI stuffed a shirt or two.\n"
    )
    doc = load_document(_write(tmp_path, "book.md", source.encode()))
    assert doc.kind == "markdown" and doc.text == source and doc.title == "Moby-Dick"
    assert [s.chapter for s in doc.segments] == [None, "Moby-Dick", "Loomings", "The Carpet-Bag"]
    assert doc.locate(doc.text.index("Ishmael"), doc.text.index("Ishmael") + 7) == "ch. 'Loomings'"
    assert doc.locate(doc.text.index("# not"), doc.text.index("# not") + 5) == "ch. 'Loomings'"
    assert doc.segments[0].start == 0 and doc.segments[-1].end == len(doc.text)


def test_gzipped_text(tmp_path):
    doc = load_document(_write(tmp_path, "story.txt.gz", gzip.compress(FRENCH.encode("latin-1"))))
    assert doc.kind == "text" and doc.source_text == FRENCH


def test_a_real_book():
    books = sorted(BOOKS.glob("Melville-Herman__Moby-Dick*.txt.gz")) if BOOKS.exists() else []
    if not books:
        pytest.skip(f"no Moby-Dick under {BOOKS} (shared data not mounted)")
    doc = load_document(books[0])
    assert "Call me Ishmael" in doc.text and doc.warnings == []
