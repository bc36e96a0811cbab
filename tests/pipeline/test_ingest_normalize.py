"""Ingestion normalization: what the model reads has its wraps joined, and every span maps back to
the original text (line numbers, pages, the document view)."""

import re
import textwrap

import pytest
import torch

from megadoc.evals.perplexity import bits_per_byte
from megadoc.pipeline import registry
from megadoc.pipeline.ingest import load_document, normalize_text
from megadoc.pipeline.recall import PassageIndex
from tests.helpers import AUSTEN, austen_paragraphs, write_pdf

_TRAINING_JOIN = re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)")  # megadoc.training.rows.clean_book


def _wrapped(paragraphs: list[str], width: int = 70) -> str:
    return "\n\n".join(textwrap.fill(p, width) for p in paragraphs) + "\n"


def test_wraps_are_joined_paragraphs_kept_spaces_collapsed():
    n = normalize_text("  Sir Walter\nElliot,   of\n   Kellynch.\n\n\n\nHe was\tvain.  \n")
    assert n.text == "Sir Walter Elliot, of Kellynch.\n\nHe was vain."


def test_pdf_hyphenation_is_undone_but_not_dashes_or_numbers():
    n = normalize_text("infor-\nmation about 1990-\n1995 and Anne-\nMarie", dehyphenate=True)
    assert n.text == "information about 1990- 1995 and Anne- Marie"
    assert normalize_text("infor-\nmation").text == "infor- mation"  # text files keep their hyphens


def test_every_character_maps_back_to_the_original():
    n = normalize_text(AUSTEN, dehyphenate=True)
    assert len(n.text) < len(AUSTEN)
    for i, char in enumerate(n.text):
        start, end = n.to_original(i, i + 1)
        assert AUSTEN[start:end] == char if not char.isspace() else not AUSTEN[start:end].strip()
    for word in ("Baronetage", "Kellynch Hall", "contemplating the limited remnant"):
        i = n.text.index(word)
        start, end = n.to_original(i, i + len(word))
        assert " ".join(AUSTEN[start:end].split()) == word  # the original span, across its line break
        assert n.from_original(start, end) == (i, i + len(word))


def test_the_text_the_model_reads_matches_training():
    """Of a wrapped book, the app reads what training read (clean_book's join), spaces collapsed."""
    wrapped = _wrapped(austen_paragraphs(6))
    assert normalize_text(wrapped).text == " ".join(_TRAINING_JOIN.sub(" ", wrapped).split(" ")).strip()


def test_wrapped_and_joined_copies_score_alike(tmp_path, tiny_model_dir):
    paragraphs = austen_paragraphs(3)
    joined = tmp_path / "joined.txt"
    joined.write_text("\n\n".join(paragraphs) + "\n")
    wrapped = tmp_path / "wrapped.txt"
    wrapped.write_text(_wrapped(paragraphs, 64))
    loaded = registry.load(tiny_model_dir, torch.device("cpu"))
    texts = [load_document(path).text for path in (wrapped, joined)]
    [as_read] = bits_per_byte(loaded.model, loaded.tokenizer, texts[:1], [128])
    [joined_read] = bits_per_byte(loaded.model, loaded.tokenizer, texts[1:], [128])
    assert abs(as_read.bits_per_byte - joined_read.bits_per_byte) < 0.02
    [raw] = bits_per_byte(loaded.model, loaded.tokenizer, [wrapped.read_text()], [128])
    assert abs(raw.bits_per_byte - joined_read.bits_per_byte) > 0.02  # what the file as it is would score


@pytest.mark.slow
def test_wrapped_and_joined_copies_score_alike_with_mini(tmp_path):
    """The shipped model (slow on CPU: its first call warms up for ~30 s)."""
    loaded = registry.load("mini", torch.device("cpu"))
    wrapped = tmp_path / "wrapped.txt"
    wrapped.write_text(AUSTEN)
    joined = tmp_path / "joined.txt"
    joined.write_text(_TRAINING_JOIN.sub(" ", AUSTEN))
    scores = [
        bits_per_byte(loaded.model, loaded.tokenizer, [load_document(p).text], [256])[0] for p in (wrapped, joined)
    ]
    assert abs(scores[0].bits_per_byte - scores[1].bits_per_byte) < 0.02


def _passage_with(index: PassageIndex, words: str):
    return next(p for p in index.passages if words in index.text(p))


def test_line_labels_and_citations_point_at_the_original_lines(tmp_path, tiny_model_dir):
    path = tmp_path / "persuasion.txt"
    source = _wrapped(austen_paragraphs(30))
    path.write_text(source)
    document = load_document(path)
    assert "\n" not in document.text.split("\n\n")[0]  # the model reads whole paragraphs
    tokenizer = registry.load(tiny_model_dir, torch.device("cpu")).tokenizer
    ids, offsets = tokenizer.encode_with_offsets(document.text)
    index = PassageIndex.build(document, offsets, 64)
    for passage in index.passages:
        start, end = document.source_span(passage.char_start, passage.char_end)
        assert passage.label == f"line {source.count(chr(10), 0, start) + 1}"
        assert " ".join(source[start:end].split()) == " ".join(index.text(passage).split())
    passage = index.passages[len(index.passages) // 2]
    query = " ".join(index.text(passage).split()[:12])
    evidence = index.evidence(query, 10_000, tokenizer.count)
    [best, *_] = index.cite(evidence, query, "")
    assert best.label == passage.label
    assert " ".join(source[best.char_start : best.char_end].split()) == " ".join(index.text(passage).split())


def test_pdf_pages_survive_normalization(tmp_path):
    paragraphs = austen_paragraphs(4)
    path = write_pdf(tmp_path / "book.pdf", [paragraphs[0], paragraphs[1] + " infor-\nmation", paragraphs[2]])
    document = load_document(path)
    assert [s.page for s in document.segments] == [1, 2, 3]
    assert "information" in document.text and "infor-" in document.source_text
    word = paragraphs[1].split()[-1]
    i = document.text.index(word + " information")
    assert document.locate(i, i + 5) == "p. 2"
    view = document.source_view()
    start, end = document.source_span(i, i + len(word))
    assert view.text[start:end] == word and view.locate(start, end) == "p. 2"
