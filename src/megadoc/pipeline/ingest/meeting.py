"""QMSum-style meeting JSON: {"meeting_transcripts": [{"speaker", "content"}, ...]}, a Segment per turn."""

from __future__ import annotations

import json

from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, source_label
from megadoc.pipeline.ingest.text import decode_text


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
        content = " ".join(turn["content"].split())
        if content:
            builder.add(f"{speaker}: {content}" if speaker else content, speaker=speaker)
    if malformed:
        warnings.append(f'{name}: {malformed} turn(s) without a "content" string skipped')
    if builder.is_empty:
        raise IngestError(f"{name}: the meeting transcript has no turns with text")
    return builder.build(source=source, kind="meeting", warnings=warnings)
