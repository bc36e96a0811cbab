"""A document with no text is one error, whatever its format: `NAME is empty`, exit 1, before any
model is loaded or anything is read (it used to read 0 tokens of broken captions, then answer)."""

import json

import pytest

from tests.helpers import assert_one_line_error, run_cli, write_pdf

CASES = {
    "empty.txt": b"",
    "blank.txt": b" \n\t\n \xe2\x80\x8b\n",  # spaces, a tab and a zero-width space
    "blank.md": b"\n\n   \n",
    "broken.srt": b"1\n00:00:0x,000 --> 00:00:02,000\n\n\n2\nnot a time --> 00:00:04,000\n<i></i>\n",
    "broken.vtt": b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<b> </b>\n\n00:00:03.000 --> 00:00:04.000\n&nbsp;\n",
    "empty-turns.json": json.dumps({"meeting_transcripts": [{"speaker": "A", "content": "  "}]}).encode(),
}


@pytest.mark.parametrize("name", [*CASES, "scan.pdf"])
def test_no_text_is_the_empty_file_error_in_every_format(app_env, tiny_model_dir, tmp_path, name):
    path = tmp_path / name
    if name.endswith(".pdf"):
        write_pdf(path, [None, None])
    else:
        path.write_bytes(CASES[name])
    result = run_cli("ask", path, "What happens?", "--model", tiny_model_dir, "--device", "cpu")
    assert_one_line_error(result, f"{path} is empty")
    assert "tokens" not in result.stderr  # nothing was read
