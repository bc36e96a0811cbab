"""QMSum-style meeting transcripts."""

import json

import pytest

from megadoc.pipeline.ingest import IngestError, load_document
from tests.helpers import SHARED_DATA

QMSUM_VAL = SHARED_DATA / "qmsum" / "val"


def test_real_qmsum_meeting():
    path = QMSUM_VAL / "TS3010a.json"
    if not path.exists():
        pytest.skip(f"{path} absent (shared data not mounted)")
    turns = json.loads(path.read_text())["meeting_transcripts"]
    doc = load_document(path)
    assert doc.kind == "meeting" and doc.warnings == []
    # A turn that is only annotation tags ("{vocalsound}") has no words to read.
    worded = [t for t in turns if set(t["content"].split()) - {"{vocalsound}", "{disfmarker}", "{gap}", "{pause}"}]
    assert len(doc.segments) == len(worded) < len(turns)
    assert "{vocalsound}" not in doc.text and "{disfmarker}" not in doc.text
    first = doc.segments[0]
    assert doc.text[first.start : first.end] == f"{turns[0]['speaker']}: {' '.join(turns[0]['content'].split())}"
    assert first.speaker == turns[0]["speaker"] and doc.locate(first.start, first.end) == turns[0]["speaker"]


def test_turns_become_speaker_lines(tmp_path):
    meeting = {
        "topic_list": [],
        "meeting_transcripts": [
            {"speaker": "Grad A", "content": "OK , we 're on ."},
            {"speaker": "Professor B", "content": "  Tschüss ,\n bis morgen . "},
            {"speaker": "Grad A", "content": ""},
            {"speaker": "", "content": "unattributed"},
            "not a turn",
        ],
    }
    path = tmp_path / "Bed999.json"
    path.write_text(json.dumps(meeting, ensure_ascii=False), encoding="utf-8")
    doc = load_document(path)
    assert doc.text == "Grad A: OK , we 're on .\nProfessor B: Tschüss , bis morgen .\nunattributed"
    assert [s.speaker for s in doc.segments] == ["Grad A", "Professor B", None]
    assert len(doc.warnings) == 1 and "1 turn(s)" in doc.warnings[0]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('{"meeting_transcripts": [', "not valid JSON (line 1"),
        ('{"transcript": []}', 'no "meeting_transcripts" list'),
        ("[1, 2]", 'no "meeting_transcripts" list'),
        ('{"meeting_transcripts": [{"speaker": "A", "content": " "}]}', "no turns with text"),
    ],
)
def test_bad_meetings(tmp_path, text, phrase):
    path = tmp_path / "meeting.json"
    path.write_text(text)
    with pytest.raises(IngestError) as error:
        load_document(path)
    message = str(error.value)
    assert "\n" not in message and "meeting.json" in message and phrase in message, message
