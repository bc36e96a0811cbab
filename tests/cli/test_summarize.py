"""`megadoc summarize`: a batch of real files, one of them broken, outputs skipped when done."""

import json
import re

from tests.helpers import (
    AUSTEN,
    assert_one_line_error,
    austen_paragraphs,
    json_rows,
    run_cli,
    run_in_terminal,
    write_pdf,
    write_srt,
    write_vtt,
)


def summarize(*args, model):
    return run_cli("summarize", *args, "--model", model, "--device", "cpu", "--max-tokens", "5")


def _batch(tmp_path):
    cues = [("Alice", "We agreed to move the launch to March."), ("Bob", "Marketing needs two more weeks.")]
    good = [
        write_pdf(tmp_path / "report.pdf", austen_paragraphs(2)),
        write_vtt(tmp_path / "standup.vtt", cues),
        write_srt(tmp_path / "talk.srt", ["Good morning.", "Today we talk about gardens and compost."]),
    ]
    broken = write_pdf(tmp_path / "scan.pdf", [None])
    return good, broken


def test_a_batch_goes_on_past_a_failure_and_skips_what_is_done(app_env, tiny_model_dir, tmp_path):
    good, broken = _batch(tmp_path)
    out = tmp_path / "summaries"
    result = summarize(*good[:2], broken, good[2], "--out", out, model=tiny_model_dir)
    assert result.exit_code == 1 and result.stdout == ""
    assert "error: " in result.stderr and "scan.pdf is empty: no extractable text" in result.stderr
    assert "Traceback" not in result.stderr
    assert "3 done, 0 skipped, 1 failed" in result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["report.pdf.summary.md", "standup.vtt.summary.md", "talk.srt.summary.md"]
    assert (out / "report.pdf.summary.md").read_text().startswith("# ")

    again = summarize(*good, "--out", out, model=tiny_model_dir)
    assert again.exit_code == 0 and "0 done, 3 skipped, 0 failed" in again.stderr

    forced = summarize(*good, "--out", out, "--force", model=tiny_model_dir)
    assert forced.exit_code == 0 and "3 done, 0 skipped, 0 failed" in forced.stderr


def test_json_summaries_and_a_query_focused_one_with_citations(app_env, tiny_model_dir, tmp_path):
    good, _ = _batch(tmp_path)
    result = summarize(good[1], "--format", "json", "--query", "When is the launch?", model=tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["query"] == "When is the launch?" and isinstance(row["summary"], str)
    assert row["citations"] and row["citations"][0]["label"].startswith("00:00:00")

    out = tmp_path / "json"
    assert summarize(good[0], "--format", "json", "--out", out, model=tiny_model_dir).exit_code == 0
    saved = json.loads((out / "report.pdf.summary.json").read_text())
    assert saved["source"].endswith("report.pdf") and saved["query"] is None


def test_one_file_to_stdout(app_env, tiny_model_dir, tmp_path):
    good, _ = _batch(tmp_path)
    result = summarize(good[2], model=tiny_model_dir)
    assert result.exit_code == 0 and result.stdout.endswith("\n") and "summarize" not in result.stderr


def test_a_single_bad_file_is_one_line_and_exit_1(app_env, tiny_model_dir, tmp_path):
    _, broken = _batch(tmp_path)
    assert_one_line_error(summarize(broken, model=tiny_model_dir), "no extractable text")
    assert_one_line_error(summarize(broken, "--format", "xml", model=tiny_model_dir), "--format must be md or json")


def test_a_long_read_shows_its_speed_and_time_left_in_a_terminal(app_env, tiny_model_dir, tmp_path):
    """stderr a terminal: the bar of a read that lasts shows tokens/s and the time left; the line
    after it gives the read's own speed."""
    book = tmp_path / "long.txt"
    book.write_text(AUSTEN * 3, encoding="utf-8")
    args = ["summarize", book, "--model", tiny_model_dir, "--device", "cpu", "--max-tokens", "3", "--no-cache"]
    status, screen = run_in_terminal(*args, stream="stderr")
    assert status == 0
    assert re.search(r"long\.txt .*/[\d,]+ tokens [\d,.]+ tok/s .*\d:\d\d:\d\d", screen), screen[-2000:]
    assert re.search(r"long\.txt: read [\d,]+ tokens in [\d.]+ s \([\d,]+ tokens/s\)", screen), screen[-2000:]
