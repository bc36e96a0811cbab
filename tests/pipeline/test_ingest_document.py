"""The Document data model: span lookup, human labels, hashing, validation."""

import hashlib

import pytest

from megadoc.pipeline.ingest import Document, Segment


def _doc(*segments: Segment, text: str = "aaaa\n\nbbbb\n\ncccc") -> Document:
    return Document(text, list(segments), source="x", kind="pdf")


def test_segment_at_finds_the_segment_and_none_in_separators():
    doc = _doc(Segment(0, 4, page=1), Segment(6, 10, page=2), Segment(12, 16, page=3))
    assert doc.segment_at(0).page == 1
    assert doc.segment_at(3).page == 1
    assert doc.segment_at(4) is None  # the blank line between pages
    assert doc.segment_at(6).page == 2
    assert doc.segment_at(15).page == 3
    assert doc.segment_at(16) is None
    assert doc.segment_at(-1) is None


def test_locate_pages():
    doc = _doc(Segment(0, 4, page=12), Segment(6, 10, page=13), Segment(12, 16, page=14))
    assert doc.locate(1, 3) == "p. 12"
    assert doc.locate(2, 8) == "pp. 12-13"
    assert doc.locate(0, 16) == "pp. 12-14"
    assert doc.locate(4, 6) == ""  # only a separator
    assert doc.locate(7, 7) == "p. 13"  # an empty span is a point


def test_locate_times_and_speakers():
    doc = _doc(
        Segment(0, 4, start_time=725.4, end_time=730.0, speaker="Speaker A"),
        Segment(6, 10, start_time=731.0, end_time=790.9, speaker="Speaker A"),
        Segment(12, 16, start_time=791.0, end_time=800.0, speaker="Speaker B"),
    )
    assert doc.locate(0, 2) == "00:12:05 (Speaker A)"
    assert doc.locate(0, 10) == "00:12:05-00:13:10 (Speaker A)"
    assert doc.locate(0, 16) == "00:12:05-00:13:20"


def test_locate_speakers_chapters_and_nothing():
    speakers = _doc(Segment(0, 4, speaker="Grad A"), Segment(6, 10, speaker="Professor B"))
    assert speakers.locate(0, 3) == "Grad A"
    assert speakers.locate(0, 10) == "Grad A, Professor B"
    many = Document("abcde", [Segment(i, i + 1, speaker=f"S{i}") for i in range(5)], "x", "meeting")
    assert many.locate(0, 5) == "S0, S1, S2 and 2 others"
    chapters = _doc(Segment(0, 4, chapter="Loomings"), Segment(6, 10, chapter="The Carpet-Bag"))
    assert chapters.locate(0, 3) == "ch. 'Loomings'"
    assert chapters.locate(0, 10) == "ch. 'Loomings' to 'The Carpet-Bag'"
    assert _doc(Segment(0, 16)).locate(0, 5) == ""


def test_content_hash_is_sha256_of_the_text():
    doc = _doc(Segment(0, 4), text="Ishmael é")
    assert doc.content_hash() == hashlib.sha256("Ishmael é".encode()).hexdigest()


@pytest.mark.parametrize(
    "segments",
    [
        [Segment(0, 5), Segment(4, 8)],  # overlapping
        [Segment(6, 8), Segment(0, 4)],  # unsorted
        [Segment(2, 2)],  # empty
        [Segment(0, 99)],  # past the end
    ],
)
def test_bad_segments_are_refused(segments):
    with pytest.raises(ValueError):
        _doc(*segments)
