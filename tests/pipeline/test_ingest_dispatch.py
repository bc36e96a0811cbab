"""Choosing the loader: extensions, sniffing unknown files and stdin; paths that are not documents."""

import gzip
import io
import json
from pathlib import Path

import pytest
from fpdf import FPDF

from megadoc.pipeline.ingest import IngestError, load_document


def _pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


SOURCES = {
    "pdf": _pdf_bytes("Hi there, from a PDF page."),
    "vtt": b"\xef\xbb\xbfWEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Ann>Hi there\n",
    "srt": b"1\r\n00:00:01,000 --> 00:00:02,000\r\nHi there\r\n",
    "meeting": json.dumps({"meeting_transcripts": [{"speaker": "Ann", "content": "Hi there"}]}).encode(),
    "text": b"Hi there, in plain prose.\n{not json}\n",
}


@pytest.mark.parametrize("kind", SOURCES)
def test_stdin_is_sniffed(kind):
    doc = load_document("-", stdin=io.BytesIO(SOURCES[kind]))
    assert doc.kind == kind and doc.source == "-"
    assert "Hi there" in doc.text


@pytest.mark.parametrize("kind", SOURCES)
def test_unknown_extensions_are_sniffed(tmp_path, kind):
    path = tmp_path / "download.bin"
    path.write_bytes(SOURCES[kind])
    assert load_document(path).kind == kind
    gzipped = tmp_path / "download.gz"
    gzipped.write_bytes(gzip.compress(SOURCES[kind]))
    assert load_document(gzipped).kind == kind


def test_extension_wins_and_source_is_kept(tmp_path):
    path = tmp_path / "NOTES.MD"
    path.write_bytes(b"# Title\n\nWEBVTT is a caption format.\n")
    doc = load_document(str(path))
    assert doc.kind == "markdown" and doc.source == str(path)


def test_stdin_errors_name_stdin():
    with pytest.raises(IngestError, match="^stdin is empty$"):
        load_document("-", stdin=io.BytesIO(b""))


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda tmp: tmp / "missing.pdf", "missing.pdf: no such file"),
        (lambda tmp: (tmp / "folder.txt").mkdir() or tmp / "folder.txt", "folder.txt is a directory"),
        (lambda tmp: _write(tmp / "fake.txt.gz", b"\x1f\x8b\x08 not gzip"), "fake.txt.gz: damaged gzip data"),
        (lambda tmp: _write(tmp / "empty.pdf", b""), "empty.pdf is empty"),
    ],
)
def test_paths_that_are_not_documents(tmp_path, make, phrase):
    path = make(tmp_path)
    with pytest.raises(IngestError) as error:
        load_document(path)
    message = str(error.value)
    assert "\n" not in message and phrase in message, message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
