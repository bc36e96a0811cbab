"""`megadoc find FILE QUERY`: ranked passages with their places, no model run."""

import shutil
import textwrap

import pytest

from megadoc.pipeline.ingest import load_document
from tests.helpers import KEEPER, assert_one_line_error, austen_paragraphs, json_rows, run_cli, write_keeper_book


@pytest.fixture
def tokenizer_only(tiny_model_dir, tmp_path):
    """The tiny model's tokenizer and config without its weights: find must not need them."""
    directory = tmp_path / "no-weights"
    directory.mkdir()
    for name in ("tokenizer.model", "config.json"):
        shutil.copy(tiny_model_dir / name, directory / name)
    return directory


def find(document, *args, model):
    return run_cli("find", document, *args, "--model", model)


def test_find_ranks_the_page_that_holds_the_words(app_env, tokenizer_only, tmp_path):
    book = write_keeper_book(tmp_path / "persuasion.pdf")
    result = find(book, "lighthouse keeper Quince", model=tokenizer_only)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1. p. 2: \u201c") and ("lighthouse" in lines[0] or "Quince" in lines[0])
    assert 1 <= len(lines) <= 5

    [row] = json_rows(find(book, "lighthouse keeper Quince", "--json", "-n", "2", model=tokenizer_only).stdout)
    assert row["query"] == "lighthouse keeper Quince" and 1 <= len(row["passages"]) <= 2
    best = row["passages"][0]
    assert best["label"] == "p. 2" and best["score"] > 0
    source = load_document(book).source_text
    quoted = " ".join(source[best["char_start"] : best["char_end"]].split())
    assert quoted == best["excerpt"].removeprefix("...").removesuffix("...")


def test_find_names_the_line_of_a_wrapped_text(app_env, tokenizer_only, tmp_path):
    paragraphs = austen_paragraphs(12)
    paragraphs[7] += " " + KEEPER
    source = "\n\n".join(textwrap.fill(p, 66) for p in paragraphs) + "\n"
    path = tmp_path / "persuasion.txt"
    path.write_text(source)
    [row] = json_rows(find(path, "Bartholomew Quince", "--json", model=tokenizer_only).stdout)
    best = row["passages"][0]
    line = source.count("\n", 0, best["char_start"]) + 1
    assert best["label"] == f"line {line}"
    assert "Bartholomew" in " ".join(source[best["char_start"] : best["char_end"]].split())


def test_no_match_is_said_on_stderr(app_env, tokenizer_only, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(austen_paragraphs(1)[0])
    result = find(path, "xylophone zeppelin", model=tokenizer_only)
    assert result.exit_code == 0 and result.stdout == "" and "no passage matches" in result.stderr
    [row] = json_rows(find(path, "xylophone", "--json", model=tokenizer_only).stdout)
    assert row["passages"] == []


def test_bad_input_is_one_line(app_env, tokenizer_only, tmp_path):
    assert_one_line_error(find(tmp_path / "missing.txt", "anything", model=tokenizer_only), "no such file")
    path = tmp_path / "notes.txt"
    path.write_text("Some text.")
    assert_one_line_error(find(path, "  ", model=tokenizer_only), "query is empty")
    assert_one_line_error(find(path, "text", model=tmp_path / "nowhere"), "nowhere")


def test_a_text_of_stopwords_alone_matches_nothing_and_says_so(app_env, tokenizer_only, tmp_path):
    """No word of it can be indexed: the passage index is empty, not a crash (it was a traceback)."""
    path = tmp_path / "stopwords.txt"
    path.write_text("The a an of. And the of a.\n" * 40)
    result = find(path, "the keeper", model=tokenizer_only)
    assert result.exit_code == 0 and result.stdout == "" and "no passage matches" in result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
