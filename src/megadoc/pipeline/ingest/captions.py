"""WebVTT (webvtt-py) and SRT (pysrt) captions: a Segment per cue with its times and speaker.

Consecutive cues of one known speaker share a line ("Ann: first cue second cue"), which reads like
a transcript and spends no tokens repeating the name, while each cue keeps its own Segment (and so
its own timestamps). Cues of unknown speaker get a line each: nothing says where a turn ends.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pysrt
import webvtt

from megadoc.display import one_line
from megadoc.pipeline.ingest.document import Document, DocumentBuilder, IngestError, empty_error, source_label
from megadoc.pipeline.ingest.text import decode_text

# "ANN:", "Dr. Smith:", ">> SPEAKER 2:" at the start of a cue: up to four capitalised words.
_LEADING_SPEAKER = re.compile(r"(?:>>\s*)?([A-Z][\w.'’-]*(?: [A-Z0-9][\w.'’-]*){0,3}):\s+(?=\S)")


@dataclass(frozen=True)
class _Cue:
    start: float
    end: float
    speaker: str | None
    text: str


def load_vtt(data: bytes, source: str) -> Document:
    text, warnings = decode_text(data, source)
    # webvtt-py raises MalformedFileError, and ValueError-like errors on odd timestamps.
    try:
        cues = [
            _cue(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.voice, c.text)
            for c in webvtt.from_string(text).captions
        ]
    except Exception as error:  # see above
        raise IngestError(f"{source_label(source)}: not a valid WebVTT file ({one_line(error)})") from error
    return _document(cues, source, "vtt", warnings)


def load_srt(data: bytes, source: str) -> Document:
    text, warnings = decode_text(data, source)
    # pysrt skips malformed cues; what it still raises means the file is not SRT.
    try:
        cues = [
            _cue(item.start.ordinal, item.end.ordinal, None, item.text_without_tags) for item in pysrt.from_string(text)
        ]
    except Exception as error:  # see above
        raise IngestError(f"{source_label(source)}: not a valid SRT file ({one_line(error)})") from error
    return _document(cues, source, "srt", warnings)


def _cue(start_ms: int, end_ms: int, voice: str | None, text: str) -> _Cue:
    text = " ".join(html.unescape(text).split())
    speaker = voice.strip() if voice else None
    if not speaker and (match := _LEADING_SPEAKER.match(text)):
        speaker, text = match.group(1), text[match.end() :]
    return _Cue(start_ms / 1000, end_ms / 1000, speaker or None, text)


def _document(cues: list[_Cue], source: str, kind: str, warnings: list[str]) -> Document:
    builder = DocumentBuilder("\n")
    previous_speaker = None
    for cue in cues:
        if not cue.text:
            continue
        origin = {"start_time": cue.start, "end_time": cue.end, "speaker": cue.speaker}
        if cue.speaker and cue.speaker == previous_speaker:
            builder.add(cue.text, separator=" ", **origin)
        else:
            builder.add(f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text, **origin)
        previous_speaker = cue.speaker
    if builder.is_empty:
        raise empty_error(source, f"no caption with text (is it a valid {kind.upper()} file?)")
    return builder.build(source=source, kind=kind, warnings=warnings)
