"""`megadoc models`, `megadoc cache ls|rm|clear` and `megadoc convert`."""

import shutil

import pytest

from tests.helpers import ORACLE, assert_one_line_error, austen_paragraphs, needs_oracle, run_cli, write_pdf


def test_models_lists_the_shipped_default_and_user_models(app_env, tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path / "user-models" / "tiny")
    result = run_cli("models")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    mini = next(line for line in lines if " mini " in line)
    assert "shipped" in mini and "installed" in mini and "not installed" not in mini
    tiny = next(line for line in lines if " tiny " in line)
    assert "user" in tiny and "installed" in tiny and " M " in tiny
    book = write_pdf(tmp_path / "b.pdf", austen_paragraphs(1))
    # A user model is found by name.
    assert run_cli("ask", book, "Who?", "--model", "tiny", "--max-tokens", "2", "--device", "cpu").exit_code == 0


def test_cache_ls_rm_clear(app_env, tiny_model_dir, tmp_path):
    books = [write_pdf(tmp_path / f"book{n}.pdf", austen_paragraphs(1, start=n)) for n in range(3)]
    for book in books:
        assert run_cli("ask", book, "Who?", "--model", tiny_model_dir, "--max-tokens", "2").exit_code == 0
    listing = run_cli("cache", "ls")
    assert listing.exit_code == 0 and listing.stdout.count("complete") == 3 and "3 cached" in listing.stderr
    assert run_cli("cache", "rm", books[1]).exit_code == 0  # by the document's path
    keys = [p.stem for p in (app_env / "states").glob("*.state")]
    assert len(keys) == 2 and run_cli("cache", "rm", keys[0][:8]).exit_code == 0  # by the start of its key
    assert run_cli("cache", "ls").stdout.count("complete") == 1
    assert_one_line_error(run_cli("cache", "rm", "ffffffffffffff"), "no cached state matches")

    assert run_cli("cache", "clear").exit_code == 1  # asks first; no answer means no
    assert run_cli("cache", "clear", "--yes").exit_code == 0
    assert list((app_env / "states").glob("*.state")) == []


@needs_oracle
def test_convert_writes_a_model_megadoc_loads(app_env, tmp_path):
    reference = ORACLE / "a" / "checkpoint"
    out = tmp_path / "converted"
    result = run_cli("convert", reference, out)
    assert result.exit_code == 0, result.stderr
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert_one_line_error(run_cli("convert", reference, out), "already holds a model")
    assert_one_line_error(run_cli("convert", tmp_path, tmp_path / "x"), "not a reference checkpoint")


@pytest.mark.parametrize("args", [["cache"], ["eval"]])
def test_groups_without_a_command_show_help(args):
    result = run_cli(*args)
    assert "Usage" in result.stdout + result.stderr and "Traceback" not in result.stderr
