"""`megadoc ask` end to end: real PDFs and captions, the tiny model, the state cache, bad input."""

import json
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import (
    KEEPER,
    VOYAGE,
    assert_one_line_error,
    austen_paragraphs,
    json_rows,
    run_cli,
    run_in_terminal,
    write_keeper_book,
    write_pdf,
    write_srt,
    write_vtt,
)


def ask(document, *args, model):
    return run_cli("ask", document, *args, "--model", model, "--device", "cpu", "--max-tokens", "6")


@pytest.fixture
def book(tmp_path):
    return write_keeper_book(tmp_path / "persuasion.pdf")


def test_answer_cites_the_page_and_a_second_question_comes_from_the_cache(app_env, tiny_model_dir, book):
    first = ask(book, "Who was the lighthouse keeper at Lyme?", "--json", model=tiny_model_dir)
    assert first.exit_code == 0, first.stderr
    [row] = json_rows(first.stdout)
    assert row["question"] == "Who was the lighthouse keeper at Lyme?" and isinstance(row["answer"], str)
    assert row["citations"][0]["label"] == "p. 2" and "lighthouse" in row["citations"][0]["excerpt"]
    total = row["document"]["tokens"]
    assert row["cache"] == "read" and 0 < total - row["tokens_read"] < 16  # read up to the last chunk boundary
    assert {"ingest_s", "load_model_s", "tokenize_s", "read_s", "index_s", "first_token_s", "answer_s"} <= row[
        "timings"
    ].keys()
    assert row["index"] == "built"

    again = ask(book, "Who was the lighthouse keeper at Lyme?", "--json", model=tiny_model_dir)
    [cached] = json_rows(again.stdout)
    assert cached["cache"] == "cached" and cached["tokens_read"] == 0
    assert cached["index"] == "cached"  # the passage index was kept with the state
    assert cached["answer"] == row["answer"]  # greedy decoding from the same state

    text = ask(book, "Who was the lighthouse keeper at Lyme?", model=tiny_model_dir)
    assert text.exit_code == 0
    assert text.stdout.startswith(row["answer"]) and text.stdout.endswith("\nSources: p. 2\n")
    assert "tokens" not in text.stdout and "from the cache" in text.stderr


ANSWER_AND_SAY_IF_THE_COMPILER_LOADED = """
import sys
from megadoc.cli import main
try:
    main()
finally:
    print("compiler loaded:", "torch._dynamo" in sys.modules, file=sys.stderr)
"""


def test_a_question_from_the_cache_in_a_new_process_loads_no_compiler(app_env, tiny_model_dir, book):
    """Importing torch's compiler (dynamo) takes ~1 s, a third of a cached answer's time on 2 cores: a
    new process that answers from the cache must not import it (nor build the model through it)."""
    assert ask(book, "Who was the keeper?", model=tiny_model_dir).exit_code == 0
    args = ["ask", str(book), "Who was the keeper?", "--json", "--model", str(tiny_model_dir), "--device", "cpu"]
    command = [sys.executable, "-c", ANSWER_AND_SAY_IF_THE_COMPILER_LOADED, *args, "--max-tokens", "6"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["cache"] == "cached"
    assert "compiler loaded: False" in result.stderr


def test_several_questions_read_the_document_once(app_env, tiny_model_dir, book, tmp_path):
    listed = tmp_path / "questions.txt"
    listed.write_text("Where is Kellynch Hall?\n\nWho is Anne?\n")
    result = ask(book, "Who was the lighthouse keeper?", "--questions", listed, "--json", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    rows = json_rows(result.stdout)
    asked = ["Who was the lighthouse keeper?", "Where is Kellynch Hall?", "Who is Anne?"]
    assert [r["question"] for r in rows] == asked
    assert len({r["tokens_read"] for r in rows}) == 1 and rows[0]["cache"] == "read"
    assert len(list((app_env / "states").glob("*.state"))) == 1

    plain = ask(book, "Who is Anne?", "Where is Bath?", model=tiny_model_dir)
    assert plain.stdout.startswith("Q: Who is Anne?\nA: ") and "\nQ: Where is Bath?\nA: " in plain.stdout


def test_a_who_question_is_answered_with_a_name_and_the_json_says_from_which(app_env, tiny_model_dir, tmp_path):
    story = tmp_path / "voyage.txt"
    story.write_text(VOYAGE, encoding="utf-8")
    [row] = json_rows(ask(story, "Who kept the great lamp burning?", "--json", model=tiny_model_dir).stdout)
    assert row["names"] and set(row["names"]) <= {"Benwick", "Harville"} and row["answer"] in row["names"]
    assert row["citations"]
    [written] = json_rows(ask(story, "Who kept the lamp?", "--no-names", "--json", model=tiny_model_dir).stdout)
    assert written["names"] is None
    text = ask(story, "Who kept the great lamp burning?", model=tiny_model_dir)
    assert text.exit_code == 0 and text.stdout.startswith(row["answer"] + "\nSources: line ")


def test_no_recall_answers_from_the_tail_without_citations(app_env, tiny_model_dir, book):
    result = ask(book, "Who was the lighthouse keeper?", "--no-recall", "--json", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["recall"] is False and row["citations"] == []


def test_captions_are_cited_by_timestamp_and_speaker(app_env, tiny_model_dir, tmp_path):
    cues = [
        ("Alice", "Welcome everyone to the quarterly planning meeting of the garden committee."),
        ("Bob", "The compost budget doubled because the tomato harvest failed in August."),
        ("Alice", "Then we must order new seeds before the winter frost arrives in November."),
    ]
    vtt = write_vtt(tmp_path / "meeting.vtt", cues)
    result = ask(vtt, "Why did the compost budget double?", "--json", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    best = row["citations"][0]
    assert "compost" in best["excerpt"] and re.fullmatch(r"00:00:07 \(Bob\)", best["label"]), row["citations"]

    srt = write_srt(tmp_path / "talk.srt", [text for _, text in cues])
    result = ask(srt, "When does the winter frost arrive?", "--json", model=tiny_model_dir)
    [row] = json_rows(result.stdout)
    assert row["citations"][0]["label"].startswith("00:00:10"), row["citations"]


def test_stdin_is_a_document(app_env, tiny_model_dir):
    result = run_cli(
        "ask",
        "-",
        "Who was the keeper?",
        "--model",
        tiny_model_dir,
        "--device",
        "cpu",
        "--max-tokens",
        "4",
        "--json",
        stdin=" ".join(austen_paragraphs(2)) + " " + KEEPER,
    )
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["document"]["source"] == "-" and row["citations"][0]["label"].startswith("line ")


def test_in_a_terminal_the_answer_shows_its_evidence_by_default(app_env, tiny_model_dir, book):
    """stdout a terminal (a pseudo-terminal here) and no --evidence: the quotes come; piped, they do not."""
    args = ["ask", str(book), "Who was the keeper?", "--model", str(tiny_model_dir), "--device", "cpu"]
    args += ["--max-tokens", "4"]
    status, screen = run_in_terminal(*args)
    assert status == 0
    assert "Evidence:" in screen and "p. 2:" in screen
    command = [sys.executable, "-c", "from megadoc.cli import main; main()", *args]
    piped = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "Evidence:" not in piped.stdout


def test_a_document_under_one_chunk_is_said_to_be_read_with_the_question(app_env, tiny_model_dir, tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("Quince.")  # under the tiny model's 16-token chunk
    result = ask(path, "Who kept the light?", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    assert "under one chunk: read with the question" in result.stderr and "read 0 tokens" not in result.stderr


def test_a_text_of_stopwords_alone_is_answered_without_evidence(app_env, tiny_model_dir, tmp_path):
    """Recall finds no word to index in it: the answer comes from the read alone (it was a traceback)."""
    path = tmp_path / "stopwords.txt"
    path.write_text("The a an of. And the of a.\n" * 40)
    result = ask(path, "Who was the keeper?", "--json", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["citations"] == [] and row["evidence"] == []


def test_a_corrupt_cache_file_is_discarded_and_the_document_read_again(app_env, tiny_model_dir, book):
    assert ask(book, "Who is Anne?", model=tiny_model_dir).exit_code == 0
    [state_file] = (app_env / "states").glob("*.state")
    state_file.write_bytes(state_file.read_bytes()[:100])
    result = ask(book, "Who is Anne?", "--json", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    assert "warning: discarding cached state" in result.stderr and "reading the document again" in result.stderr
    [row] = json_rows(result.stdout)
    assert row["cache"] == "read" and row["tokens_read"] > 0


def _blank_pdf(tmp_path):
    return write_pdf(tmp_path / "scan.pdf", [None, None, None])


def _encrypted_pdf(tmp_path):
    return write_pdf(tmp_path / "locked.pdf", ["Secret."], owner_password="o", user_password="secret")


def _corrupt_pdf(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    return path


def _empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (_blank_pdf, "no extractable text on any of 3 pages"),
        (_encrypted_pdf, "is encrypted; pass its password with --password"),
        (_corrupt_pdf, "cannot read this PDF"),
        (_empty_file, "is empty"),
        (lambda tmp_path: tmp_path / "missing.pdf", "no such file"),
        (lambda tmp_path: tmp_path, "is a directory"),
    ],
    ids=["scanned", "encrypted", "corrupt", "empty", "missing", "directory"],
)
def test_bad_documents_give_one_line_and_exit_1(app_env, tiny_model_dir, tmp_path, make, phrase):
    assert_one_line_error(ask(make(tmp_path), "Who?", model=tiny_model_dir), phrase)


def test_an_encrypted_pdf_opens_with_its_password(app_env, tiny_model_dir, tmp_path):
    result = ask(_encrypted_pdf(tmp_path), "What is secret?", "--password", "secret", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr


def _truncated_weights(directory, tmp_path):
    copy = tmp_path / "truncated"
    copy.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (copy / name).write_bytes((directory / name).read_bytes())
    (copy / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes()[:500])
    return copy


def _no_tokenizer(directory, tmp_path):
    copy = tmp_path / "no-tokenizer"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((directory / name).read_bytes())
    return copy


@pytest.mark.parametrize(
    ("model", "phrase"),
    [
        (_truncated_weights, "unreadable weights"),
        (_no_tokenizer, "no tokenizer.model"),
        (lambda d, t: t / "nowhere", "no such model directory"),
    ],
    ids=["truncated", "no-tokenizer", "missing"],
)
def test_bad_models_give_one_line_and_exit_1(app_env, tiny_model_dir, book, tmp_path, model, phrase):
    assert_one_line_error(ask(book, "Who?", model=model(tiny_model_dir, tmp_path)), phrase)


def test_the_shipped_mini_model_is_the_default(app_env, book):
    result = run_cli("ask", book, "Who is Anne?", "--json", "--max-tokens", "8", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "mini" and answer["document"]["tokens"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(app_env, tiny_model_dir, book):
    result = run_cli("ask", book, "Who?", "--model", tiny_model_dir, "--device", "cuda")
    assert_one_line_error(result, "no CUDA GPU")


def test_a_question_is_required(app_env, tiny_model_dir, book):
    assert_one_line_error(ask(book, model=tiny_model_dir), "no question given")
