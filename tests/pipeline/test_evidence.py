"""Answers show their evidence (recalled passages quoted with their place) and are checked against
the document: `megadoc ask --evidence`, its --json, and the support check.

The tiny model's answers are random, so where a test needs a known answer it replaces only the
model's token stream (session.stream_text); reading, recall, quoting and the check are real."""

import re

import pytest

from megadoc.pipeline import session
from megadoc.pipeline.ingest import load_document
from megadoc.pipeline.support import PARTLY, SUPPORTED, UNSUPPORTED, check_support
from tests.helpers import json_rows, run_cli, write_keeper_book

QUESTION = "Who was the lighthouse keeper at Lyme?"


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A three-page PDF whose second page alone names the keeper; its cache is shared by the
    module's tests, so the book is read once."""
    folder = tmp_path_factory.mktemp("evidence")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEGADOC_CACHE_DIR", str(folder / "cache"))
        patch.setenv("MEGADOC_MODELS_DIR", str(folder / "user-models"))
        yield write_keeper_book(folder / "persuasion.pdf")


def ask(document, *args, model):
    return run_cli("ask", document, *args, "--model", model, "--device", "cpu", "--max-tokens", "6")


@pytest.fixture
def answer_with(monkeypatch):
    """Make the model 'say' a given answer: only its token stream is replaced."""

    def use(text: str) -> None:
        monkeypatch.setattr(session, "stream_text", lambda *args, **kwargs: iter([" ", text]))

    return use


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text)}


def test_evidence_quotes_the_recalled_passage_with_its_page(tiny_model_dir, book):
    result = ask(book, QUESTION, "--evidence", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    evidence = result.stdout.split("Evidence:\n", 1)[1].splitlines()
    assert 1 <= len(evidence) <= 3
    assert evidence[0].startswith("  p. 2: \u201c") and "lighthouse keeper" in evidence[0]

    plain = ask(book, QUESTION, model=tiny_model_dir)  # stdout is not a terminal: no evidence by default
    assert "Evidence:" not in plain.stdout and plain.stdout.endswith("Sources: p. 2\n")


def test_json_has_the_evidence_pointing_at_the_original_text(tiny_model_dir, book):
    [row] = json_rows(ask(book, QUESTION, "--json", "--no-evidence", model=tiny_model_dir).stdout)
    [best, *rest] = row["evidence"]
    assert best["label"] == "p. 2" and "lighthouse keeper" in best["excerpt"] and len(rest) <= 2
    source = load_document(book).source_text
    quoted = " ".join(source[best["char_start"] : best["char_end"]].split())
    assert quoted == best["excerpt"].removeprefix("...").removesuffix("...")
    support = row["support"]  # the tiny model's random answer, checked for real
    if support is not None:
        in_document = _words(load_document(book).text)
        assert all(w not in in_document for w in support["missing"])
        assert support["verdict"] in (SUPPORTED, PARTLY, UNSUPPORTED)


def test_a_supported_answer_has_no_mark(tiny_model_dir, book, answer_with):
    answer_with("A gruff old sailor, Bartholomew Quince.")
    [row] = json_rows(ask(book, QUESTION, "--json", model=tiny_model_dir).stdout)
    assert row["answer"] == "A gruff old sailor, Bartholomew Quince."
    assert row["support"]["verdict"] == SUPPORTED and row["support"]["missing"] == []
    assert set(row["support"]["in_evidence"]) <= {"gruff", "old", "sailor", "bartholomew", "quince"}
    text = ask(book, QUESTION, "--evidence", model=tiny_model_dir)
    assert "not found in the document" not in text.stdout + text.stderr


def test_an_unsupported_answer_is_marked_in_text_and_json(tiny_model_dir, book, answer_with):
    answer_with("Napoleon Bonaparte, emperor.")
    [row] = json_rows(ask(book, QUESTION, "--json", model=tiny_model_dir).stdout)
    assert row["support"] == {
        "verdict": UNSUPPORTED,
        "missing": ["napoleon", "bonaparte", "emperor"],
        "in_evidence": [],
    }
    shown = ask(book, QUESTION, "--evidence", model=tiny_model_dir)
    lines = shown.stdout.splitlines()
    assert lines[0] == "Napoleon Bonaparte, emperor." and lines[1] == "Sources: p. 2"
    assert lines[2].startswith("[not found in the document: none of the answer's words (napoleon, bonaparte")
    assert lines[3] == "Evidence:"
    plain = ask(book, QUESTION, model=tiny_model_dir)  # without evidence: stdout stays the answer
    assert "not found" not in plain.stdout and "warning: answer not found in the document" in plain.stderr


def test_support_check_verdicts():
    vocabulary = {"captain", "wentworth", "sailor", "navy", "anne"}
    assert check_support("A sailors' captain.", "Who is Wentworth?", vocabulary, ["a sailor"]).verdict == SUPPORTED
    partly = check_support("A pirate in the navy", "Who is Wentworth?", vocabulary, [])
    assert partly.verdict == PARTLY and partly.missing == ["pirate"] and "pirate" in partly.note
    assert check_support("Wentworth", "Who is Wentworth?", vocabulary, []) is None  # nothing beyond the question
    assert check_support("", "Who is Wentworth?", vocabulary, []) is None
