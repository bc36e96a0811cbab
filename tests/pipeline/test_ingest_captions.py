"""WebVTT and SRT captions: voice tags, leading speaker names, multi-line cues, non-ASCII."""

from pathlib import Path

import pytest

from megadoc.pipeline.ingest import IngestError, load_document

VTT = """WEBVTT
Kind: captions

NOTE written by the test, with a voice change and a cue without speaker

intro
00:00:01.000 --> 00:00:04.500 align:start
<v Roger Bingham>We are in New York City
and it's <i>great</i> &amp; busy

00:00:04.500 --> 00:00:06.000
<v Roger Bingham>Let's talk about the cosmos.

00:12:05.000 --> 00:12:09.250
<v.loud Zoë Ångström>Héllo — 你好, naïve café!</v>

00:12:10.000 --> 00:13:10.000
Music plays
softly

01:02:03.000 --> 01:02:04.000
<c.yellow>BOB:</c> and <00:00:07.500>goodbye
"""

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>JOHN: Hello</i>
world, Ærø

2
00:00:03,000 --> 00:00:04,000
JOHN: still me

3
00:00:05,000 --> 00:00:06,000
Straße im Süden

"""


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_vtt_cues_become_lines_with_speakers_and_times(tmp_path):
    doc = load_document(_write(tmp_path, "talk.vtt", VTT))
    assert doc.kind == "vtt" and doc.warnings == []
    assert doc.text.split("\n") == [
        "Roger Bingham: We are in New York City and it's great & busy Let's talk about the cosmos.",
        "Zoë Ångström: Héllo — 你好, naïve café!",
        "Music plays softly",
        "BOB: and goodbye",
    ]
    # Cues of one speaker share a line but keep their own segments and times.
    assert [(s.start_time, s.end_time, s.speaker) for s in doc.segments] == [
        (1.0, 4.5, "Roger Bingham"),
        (4.5, 6.0, "Roger Bingham"),
        (725.0, 729.25, "Zoë Ångström"),
        (730.0, 790.0, None),
        (3723.0, 3724.0, "BOB"),
    ]
    cosmos = doc.text.index("cosmos")
    assert doc.segment_at(cosmos).start_time == 4.5
    assert doc.locate(cosmos, cosmos + 6) == "00:00:04 (Roger Bingham)"
    greeting = doc.text.index("Héllo")
    assert doc.locate(greeting, doc.text.index("softly")) == "00:12:05-00:13:10"
    assert doc.locate(0, doc.text.index("cosmos")) == "00:00:01-00:00:06 (Roger Bingham)"


def test_srt_cues_with_tags_and_leading_names(tmp_path):
    doc = load_document(_write(tmp_path, "film.srt", SRT))
    assert doc.kind == "srt"
    assert doc.text == "JOHN: Hello world, Ærø still me\nStraße im Süden"
    assert [(s.start_time, s.end_time, s.speaker) for s in doc.segments] == [
        (1.0, 2.5, "JOHN"),
        (3.0, 4.0, "JOHN"),
        (5.0, 6.0, None),
    ]


def test_srt_in_a_legacy_encoding(tmp_path):
    doc = load_document(_write(tmp_path, "film.srt", SRT.replace("Ærø", "Aero"), encoding="cp1252"))
    assert "Straße im Süden" in doc.text


@pytest.mark.parametrize(
    ("name", "text", "phrase"),
    [
        ("empty-cues.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<i></i>\n", "is empty: no caption with text"),
        ("notvtt.vtt", "Just some words\nwithout a header.\n", "not a valid WebVTT file"),
        ("notsrt.srt", "Just some words\nwithout any cue.\n", "is empty: no caption with text"),
    ],
)
def test_bad_captions(tmp_path, name, text, phrase):
    path = _write(tmp_path, name, text)
    with pytest.raises(IngestError) as error:
        load_document(path)
    message = str(error.value)
    assert "\n" not in message and name in message and phrase in message, message
