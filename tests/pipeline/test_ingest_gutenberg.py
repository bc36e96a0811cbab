"""A Project Gutenberg file is read without its licence, and every place still points at the file."""

import textwrap

import pytest

from megadoc.pipeline.ingest import load_document, normalize_text, strip_gutenberg
from megadoc.training.corpus import read_book
from tests.helpers import KEEPER, SHARED_DATA, austen_paragraphs, json_rows, run_cli

HEADER = """The Project Gutenberg EBook of Persuasion, by Jane Austen

This eBook is for the use of anyone anywhere at no cost and with almost no restrictions
whatsoever.  You may copy it, give it away or re-use it under the terms of the Project
Gutenberg License included with this eBook or online at www.gutenberg.org

Title: Persuasion

*** START OF THIS PROJECT GUTENBERG EBOOK PERSUASION ***




Produced by Sharon Partridge and Martin Ward. HTML version
by Al Haines.




"""
FOOTER = """


End of the Project Gutenberg EBook of Persuasion, by Jane Austen

*** END OF THIS PROJECT GUTENBERG EBOOK PERSUASION ***

Updated editions will replace the previous one--the old editions will be renamed.
Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works
1.A. By reading or using any part of this Project Gutenberg-tm electronic work, you indicate
that you have read, understand, agree to and accept all the terms of this license.
"""


def _gutenberg_file(tmp_path):
    paragraphs = austen_paragraphs(10)
    paragraphs[6] += " " + KEEPER
    body = "\n\n".join(textwrap.fill(p, 70, break_on_hyphens=False) for p in paragraphs)
    path = tmp_path / "persuasion.txt"
    path.write_text(HEADER + body + FOOTER)
    return path, paragraphs


def test_the_book_is_read_without_its_licence_or_credits(tmp_path):
    path, paragraphs = _gutenberg_file(tmp_path)
    document = load_document(path)
    assert document.text == "\n\n".join(paragraphs)  # the book alone, its wraps joined
    assert document.source_text == path.read_text()  # the view and the places keep the whole file
    first = document.source_span(0, len("Sir Walter"))
    assert document.source_text[first[0] : first[1]] == "Sir Walter"


def test_a_text_without_a_gutenberg_header_keeps_every_paragraph(tmp_path):
    """Credits-like paragraphs ("Prepared by ...") are only dropped after a Gutenberg header."""
    path = tmp_path / "minutes.txt"
    path.write_text("Prepared by the board's secretary.\n\n" + austen_paragraphs(1)[0] + "\n")
    assert load_document(path).text.startswith("Prepared by the board's secretary.")


def test_a_left_out_stretch_between_two_kept_spans_is_a_paragraph_break():
    text = "One two.\n\n<<NOTICE>>\n\nThree\nfour."
    normalized = normalize_text(text, keep=[(0, 10), (22, len(text))])
    assert normalized.text == "One two.\n\nThree four."
    i = normalized.text.index("Three")
    assert normalized.to_original(i, i + 5) == (22, 27)
    start, end = normalized.from_original(12, 20)
    assert start >= end  # the notice itself reads as nothing (an empty span)


def test_find_never_quotes_the_licence_and_names_the_files_lines(app_env, tiny_model_dir, tmp_path):
    path, _ = _gutenberg_file(tmp_path)
    source = path.read_text()
    result = run_cli("find", path, "Project Gutenberg license terms", "--json", "--model", tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    assert all("Gutenberg" not in p["excerpt"] for p in json_rows(result.stdout)[0]["passages"])
    [row] = json_rows(run_cli("find", path, "Bartholomew Quince", "--json", "--model", tiny_model_dir).stdout)
    best = row["passages"][0]
    assert best["label"] == f"line {source.count(chr(10), 0, best['char_start']) + 1}"
    assert "Bartholomew" in " ".join(source[best["char_start"] : best["char_end"]].split())


BOOKS = SHARED_DATA / "books"


@pytest.mark.skipif(not BOOKS.is_dir(), reason=f"shared books not found at {BOOKS}")
@pytest.mark.parametrize("name", ["Austen-Jane__Persuasion", "Shakespeare-William__Cymbeline"])
def test_a_real_book_reads_as_training_read_it(name):
    """What the app reads of a Gutenberg book is its body, normalized: the training text."""
    path = BOOKS / f"{name}.txt.gz"
    assert load_document(path).text == normalize_text(strip_gutenberg(read_book(path))).text
