"""Plain text and Markdown: decoding bytes of any encoding, and Markdown headings as chapters."""

from __future__ import annotations

import codecs
import re

import charset_normalizer
from markdown_it import MarkdownIt

from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, empty_error, source_label
from megadoc.pipeline.ingest.normalize import normalize_document

# Checked in this order: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_BINARY_FRACTION = 0.05  # control characters in real text are rare; binary data decodes to many
_SAMPLE_CHARS = 100_000
# The Markdown parser is pure Python (~1.5 s per MB); past this size, skip chapter labels.
_MARKDOWN_HEADINGS_MAX_CHARS = 8_000_000


def decode_text(data: bytes, source: str) -> tuple[str, list[str]]:
    """Decode bytes of unknown encoding to text with "\\n" newlines, and any warnings."""
    name = source_label(source)
    text, warnings = _decode(data, name)
    sample = text[:_SAMPLE_CHARS]
    if len(_NOT_TEXT.findall(sample)) > _BINARY_FRACTION * len(sample):
        raise IngestError(f"{name} looks like binary data, not text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise empty_error(source)
    return text, warnings


def load_text(data: bytes, source: str) -> Document:
    """Plain text, normalized for the model (wrapped lines joined; see ingest.normalize)."""
    text, warnings = decode_text(data, source)
    builder = DocumentBuilder("")
    builder.add(text)
    return normalize_document(builder.build(source=source, kind="text", warnings=warnings))


def load_markdown(data: bytes, source: str) -> Document:
    """Markdown kept as written (the model reads it well), a Segment per section named by its heading."""
    text, warnings = decode_text(data, source)
    if len(text) > _MARKDOWN_HEADINGS_MAX_CHARS:
        warnings.append(f"{source_label(source)} is too large to look for headings; no chapter labels")
        headings = []
    else:
        headings = _headings(text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    builder = DocumentBuilder("")
    starts = [0] + [line_starts[line] for line, _, _ in headings]
    chapters = [None] + [title for _, _, title in headings]
    for start, end, chapter in zip(starts, starts[1:] + [len(text)], chapters, strict=True):
        builder.add(text[start:end], chapter=chapter)
    title = next((title for _, level, title in headings if level == 1), None)
    return builder.build(source=source, kind="markdown", title=title, warnings=warnings)


def _decode(data: bytes, name: str) -> tuple[str, list[str]]:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _decode_with(data, codec, name)
    if b"\x00" not in data:  # NULs are valid UTF-8 but mean UTF-16/32 or binary
        try:
            return data.decode("utf-8"), []
        except UnicodeDecodeError:
            pass
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        well_formed_non_ascii = len(text) - len(text.encode("ascii", errors="ignore")) - bad
        if well_formed_non_ascii > bad:  # UTF-8 with a few damaged bytes, not another encoding
            return text, [f"{name}: {bad} invalid UTF-8 byte sequence(s) replaced with U+FFFD"]
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        return data.decode("utf-8", errors="replace"), [
            f"{name}: could not detect the text encoding; decoded as UTF-8 with replacement characters"
        ]
    # charset-normalizer often ranks cp1250/cp775 first for Western European text where cp1252 is
    # as plausible; prefer cp1252 (the web's default legacy encoding) on a near tie.
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and western.chaos <= best.chaos + 0.02:
        best = western
    return str(best), []


def _decode_with(data: bytes, codec: str, name: str) -> tuple[str, list[str]]:
    try:
        return data.decode(codec), []
    except UnicodeDecodeError:
        return data.decode(codec, errors="replace"), [f"{name}: invalid {codec} byte sequences replaced with U+FFFD"]


def _headings(text: str) -> list[tuple[int, int, str | None]]:
    """(0-based line, level, title) of each heading, from the block parser (skips code blocks)."""
    parser = MarkdownIt("commonmark").disable(["inline", "text_join"])  # block structure is enough
    tokens = parser.parse(text)
    return [
        (token.map[0], int(token.tag[1]), tokens[i + 1].content.strip() or None)
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.map
    ]
