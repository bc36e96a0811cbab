"""Ingestion: any input (PDF, text, Markdown, EPUB, captions, meeting JSON) to a Document whose
every span maps back to its page, time, speaker or chapter."""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from megadoc.display import byte_size
from megadoc.pipeline.ingest.captions import load_srt, load_vtt
from megadoc.pipeline.ingest.detect import kind_from_name, sniff_kind
from megadoc.pipeline.ingest.document import Document, IngestError, Segment, empty_error
from megadoc.pipeline.ingest.epub import load_epub
from megadoc.pipeline.ingest.meeting import load_meeting
from megadoc.pipeline.ingest.normalize import Normalized, normalize_text
from megadoc.pipeline.ingest.pdf import load_pdf
from megadoc.pipeline.ingest.text import load_markdown, load_text

__all__ = ["Document", "IngestError", "Normalized", "Segment", "load_document", "normalize_text"]

MAX_BYTES = 2 * 1024**3  # larger inputs are refused rather than read into memory

_LOADERS: dict[str, Callable[[bytes, str], Document]] = {
    "text": load_text,
    "markdown": load_markdown,
    "epub": load_epub,
    "vtt": load_vtt,
    "srt": load_srt,
    "meeting": load_meeting,
}


def load_document(source: str | Path, *, password: str | None = None, stdin: BinaryIO | None = None) -> Document:
    """Read a file, or stdin when `source` is "-", into a Document.

    The format comes from the extension, else from the content; `name.ext.gz` is decompressed
    first. `password` opens encrypted PDFs. Raises IngestError (one line naming the source).
    """
    if str(source) == "-":
        source, label, file_name = "-", "stdin", ""
        data = _read_limited(stdin if stdin is not None else sys.stdin.buffer, label)
    else:
        path = Path(source)
        source, label, file_name = str(source), str(source), path.name
        data = _read_file(path)
    if data.startswith(b"\x1f\x8b"):
        data = _gunzip(data, label)
        file_name = file_name.removesuffix(".gz").removesuffix(".GZ")
    if not data:
        raise empty_error(source)
    kind = kind_from_name(file_name) or sniff_kind(data)
    document = load_pdf(data, source, password) if kind == "pdf" else _LOADERS[kind](data, source)
    if not any(char.isprintable() and not char.isspace() for char in document.text):
        raise empty_error(source, "no visible text in it")  # whitespace, control or zero-width characters
    return document


def _read_file(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise IngestError(f"{path} is a directory, not a document")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise IngestError(f"{path} is too large ({byte_size(size)}; the limit is {byte_size(MAX_BYTES)})")
        with path.open("rb") as file:
            return _read_limited(file, str(path))
    except FileNotFoundError:
        raise IngestError(f"{path}: no such file") from None
    except PermissionError:
        raise IngestError(f"{path}: permission denied") from None
    except OSError as error:
        raise IngestError(f"{path}: cannot read it ({error.strerror or error})") from None


def _read_limited(stream: BinaryIO, label: str) -> bytes:
    data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise IngestError(f"{label} is too large (more than 2 GiB)")
    return data


def _gunzip(data: bytes, label: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as file:
            return _read_limited(file, label)
    except (OSError, EOFError, zlib.error) as error:
        raise IngestError(f"{label}: damaged gzip data ({error})") from None
