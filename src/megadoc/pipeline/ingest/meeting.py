"""QMSum-style meeting JSON: {"meeting_transcripts": [{"speaker", "content"}, ...]}, a Segment per turn."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, empty_error, source_label
from megadoc.pipeline.ingest.text import decode_text

# QMSum's annotation tags: 9.8% of the characters of its val transcripts, in none of its 272 reference
# answers. Ingestion, training rows and the SCROLLS loader all drop them.
_ANNOTATION = re.compile(r"\{(?:disfmarker|vocalsound|nonvocalsound|gap|pause|comment)\}")


def turn_text(speaker: str | None, content: str) -> str:
    """One meeting turn as megadoc reads it: `Speaker: words`, whitespace collapsed, annotation tags
    removed; "" for a turn with no words."""
    words = " ".join(_ANNOTATION.sub(" ", content).split())
    if not words:
        return ""
    return f"{speaker}: {words}" if speaker else words


def format_transcript(turns: Iterable[dict[str, str]]) -> str:
    """QMSum turns ({"speaker", "content"}) as one `Speaker: words` line per turn with words."""
    return "\n".join(line for turn in turns if (line := turn_text(turn["speaker"], turn["content"])))


def load_meeting(data: bytes, source: str) -> Document:
    name = source_label(source)
    text, warnings = decode_text(data, source)
    try:
        meeting = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"{name}: not valid JSON (line {error.lineno}: {error.msg})") from error
    turns = meeting.get("meeting_transcripts") if isinstance(meeting, dict) else None
    if not isinstance(turns, list):
        raise IngestError(f'{name}: not a meeting transcript (no "meeting_transcripts" list of turns)')

    builder = DocumentBuilder("\n")
    malformed = 0
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            malformed += 1
            continue
        speaker = " ".join(str(turn.get("speaker") or "").split()) or None
        line = turn_text(speaker, turn["content"])
        if line:
            builder.add(line, speaker=speaker)
    if malformed:
        warnings.append(f'{name}: {malformed} turn(s) without a "content" string skipped')
    if builder.is_empty:
        raise empty_error(source, "the meeting transcript has no turns with text")
    return builder.build(source=source, kind="meeting", warnings=warnings)
