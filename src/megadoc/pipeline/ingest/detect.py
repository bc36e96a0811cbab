"""Which loader reads a source: by file extension, else by sniffing the first bytes."""

from __future__ import annotations

import codecs
import re

_EXTENSIONS = {
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".epub": "epub",
    ".vtt": "vtt",
    ".srt": "srt",
    ".json": "meeting",
}
_SRT_START = re.compile(rb"\d+[ \t]*\r?\n\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}[ \t]*-->")


def kind_from_name(file_name: str) -> str | None:
    """The kind a file's extension names, or None for an unknown or missing extension."""
    suffix = file_name.rpartition(".")[2].lower() if "." in file_name else ""
    return _EXTENSIONS.get(f".{suffix}")


def sniff_kind(data: bytes) -> str:
    """The kind of a source with no telling extension, from its content; "text" when nothing matches."""
    if b"%PDF-" in data[:1024]:  # the header may follow a little junk
        return "pdf"
    if data.startswith(b"PK\x03\x04") and b"mimetypeapplication/epub+zip" in data[:100]:
        return "epub"
    head = data[:4096].removeprefix(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"WEBVTT"):
        return "vtt"
    if _SRT_START.match(head):
        return "srt"
    if head.startswith(b"{") and b'"meeting_transcripts"' in data:
        return "meeting"
    return "text"
