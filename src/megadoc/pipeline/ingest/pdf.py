"""PDF via pypdf: a Segment per page, named by the outline (bookmarks) where there is one."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from pypdf import PdfReader

from megadoc.display import one_line
from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, empty_error, source_label
from megadoc.pipeline.ingest.normalize import normalize_document

MAX_PAGES = 200_000  # a 10M-token book has ~25K pages; more means a broken or hostile page tree
_EMPTY_PAGES_WARNING_FRACTION = 0.1
_OBJECT = re.compile(rb"(\d+)\s+\d+\s+obj\b")
# Typographic ligatures (U+FB00-FB06: "ﬁ", "ﬂ", ...) that pdfTeX fonts emit; spelled out they
# tokenize and match search terms like the words they are.
_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
)


def load_pdf(data: bytes, source: str, password: str | None = None) -> Document:
    name = source_label(source)
    repairs: list[str] = []
    warnings: list[str] = []
    # pypdf raises many exception types on malformed files (its own, KeyError, ValueError, ...);
    # any of them means this file cannot be read, and must reach the user as one line.
    try:
        with _pypdf_log_to(repairs):
            reader, cut_off = _open(data)
            _decrypt(reader, name, password)
            page_count = len(reader.pages)
            declared = _declared_pages(reader) if cut_off else page_count
            if page_count > MAX_PAGES:
                raise IngestError(f"{name} has {page_count} pages; more than {MAX_PAGES} is not supported")
            texts = [_page_text(reader, i, name, warnings) for i in range(page_count)]
            chapters = _chapter_per_page(reader, page_count, name, warnings)
            title = _title(reader)
    except IngestError:
        raise
    except Exception as error:  # see above
        raise IngestError(f"{name}: cannot read this PDF ({one_line(error)})") from error

    if page_count == 0:
        raise IngestError(f"{name} has no pages")
    empty = sum(1 for text in texts if not text)
    if cut_off and empty < page_count:
        lost = [i + 1 for i, text in enumerate(texts) if not text] + list(range(page_count + 1, declared + 1))
        warnings.append(
            f"{name} is cut off (a truncated file): read {page_count - empty} of {max(declared, page_count)} pages; "
            f"{_pages(lost)} could not be read"
            if lost
            else f"{name} is cut off (a truncated file): read every page"
        )
        repairs = []
    elif empty == page_count and cut_off:
        raise IngestError(f"{name} is cut off (a truncated file) and no page's text survives")
    elif empty == page_count:
        where = "its only page" if page_count == 1 else f"any of {page_count} pages"
        raise empty_error(source, f"no extractable text on {where} (scanned PDF? run OCR first)")
    if empty > _EMPTY_PAGES_WARNING_FRACTION * page_count and not cut_off:
        warnings.append(
            f"{name}: {empty} of {page_count} pages have no extractable text "
            "(scanned pages? run OCR first to read them)"
        )
    if repairs:
        more = f" (and {len(repairs) - 1} more)" if len(repairs) > 1 else ""
        warnings.append(f"{name}: damaged PDF, read in lenient mode: {repairs[0]}{more}")

    builder = DocumentBuilder("\n\n")
    for number, (text, chapter) in enumerate(zip(texts, chapters, strict=True), start=1):
        builder.add(text, page=number, chapter=chapter)
    document = builder.build(source=source, kind="pdf", title=title, warnings=warnings)
    return normalize_document(document, dehyphenate=True)


def _open(data: bytes) -> tuple[PdfReader, bool]:
    """The reader, and whether the file is cut off: a file truncated before its end (no %%EOF, no
    cross-reference table) gets a trailer appended naming how many objects there are, so that
    pypdf's lenient mode rebuilds the table from the objects that survive, and finds the catalog."""
    try:
        return PdfReader(io.BytesIO(data), strict=False), False
    except Exception:  # same reason as in load_pdf
        if b"%%EOF" in data[-1024:]:
            raise
    size = 1 + max((int(m.group(1)) for m in _OBJECT.finditer(data)), default=0)
    trailer = b"\ntrailer\n<< /Size %d >>\nstartxref\n0\n%%%%EOF\n" % size
    return PdfReader(io.BytesIO(data + trailer), strict=False), True


def _declared_pages(reader: PdfReader) -> int:
    """How many pages the page tree says there are (more than survive in a cut-off file)."""
    try:
        return int(reader.root_object["/Pages"]["/Count"])
    except Exception:  # same reason as in load_pdf: an unreadable count only costs the number
        return len(reader.pages)


def _pages(numbers: list[int]) -> str:
    """[1, 4, 5, 6] -> "pp. 1, 4-6"."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    listed = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return f"{'p' if numbers == numbers[:1] else 'pp'}. {listed}"


def _decrypt(reader: PdfReader, name: str, password: str | None) -> None:
    """Open an encrypted file with `password`, or the empty password (permissions-only encryption)."""
    if not reader.is_encrypted:
        return
    for candidate in ([password] if password else []) + [""]:
        if reader.decrypt(candidate):
            return
    if password is None:
        raise IngestError(f"{name} is encrypted; pass its password with --password")
    raise IngestError(f"{name}: wrong password")


def _page_text(reader: PdfReader, index: int, name: str, warnings: list[str]) -> str:
    """One page's text; a page pypdf cannot parse becomes a warning, not a lost document."""
    try:
        text = reader.pages[index].extract_text()
    except Exception as error:  # same reason as in load_pdf
        warnings.append(f"{name}: p. {index + 1} skipped, its text cannot be read ({one_line(error)})")
        return ""
    text = text.translate(_LIGATURES).replace("\x00", "").strip()
    if text.count("\ufffd") > len(text) / 2:  # its fonts' character maps are lost (a cut-off file, say)
        warnings.append(f"{name}: p. {index + 1} skipped, its characters cannot be decoded")
        return ""
    return text


def _chapter_per_page(reader: PdfReader, page_count: int, name: str, warnings: list[str]) -> list[str | None]:
    """Per page, the top-level outline entry it belongs to; of several starting on a page, the first."""
    chapters: list[str | None] = [None] * page_count
    try:
        starts = []
        for entry in reader.outline:
            if isinstance(entry, list):  # children of the previous entry: sections, not chapters
                continue
            page = reader.get_destination_page_number(entry)
            title = (entry.title or "").strip()
            if page is not None and 0 <= page < page_count and title:
                starts.append((page, title))
    except Exception as error:  # an unreadable outline only costs the chapter names
        warnings.append(f"{name}: outline (bookmarks) unreadable, no chapter names ({one_line(error)})")
        return chapters
    first_on_page: dict[int, str] = {}
    last_on_page: dict[int, str] = {}
    for page, title in sorted(starts, key=lambda start: start[0]):
        first_on_page.setdefault(page, title)
        last_on_page[page] = title
    current = None
    for page in range(page_count):
        chapters[page] = first_on_page.get(page, current)
        current = last_on_page.get(page, current)
    return chapters


def _title(reader: PdfReader) -> str | None:
    metadata = reader.metadata
    title = metadata.title if metadata else None
    if not isinstance(title, str):
        return None
    return title.replace("\x00", "").strip() or None


@contextmanager
def _pypdf_log_to(messages: list[str]) -> Iterator[None]:
    """Collect pypdf's log warnings (repairs of damaged files) instead of printing them to stderr."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage().strip())

    logger = logging.getLogger("pypdf")
    handler = Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
