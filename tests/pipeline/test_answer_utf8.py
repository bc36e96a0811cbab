"""Answers never show invalid UTF-8: byte-fallback pieces that never form a character (a stray
continuation byte, a character cut off by the token limit) do not reach stdout or --json."""

import pytest

from megadoc.engine import Tokenizer, generation
from tests.helpers import json_rows, run_cli


@pytest.fixture
def model_says(monkeypatch, tiny_model_dir):
    """Make the model generate given token ids: only generation.generate is replaced, the decoding
    of its ids (stream_text, the incremental decoder) and the command are real."""
    tokenizer = Tokenizer.load(tiny_model_dir / "tokenizer.model")

    def use(*pieces: str | bytes) -> None:
        ids = []
        for piece in pieces:
            if isinstance(piece, bytes):
                ids += [tokenizer._sp.piece_to_id(f"<0x{byte:02X}>") for byte in piece]
            else:
                ids += tokenizer.encode(piece)
        monkeypatch.setattr(generation, "generate", lambda *args, **kwargs: iter(ids))

    return use


def test_stray_and_cut_off_bytes_never_reach_the_screen(app_env, tiny_model_dir, tmp_path, model_says):
    book = tmp_path / "book.txt"
    book.write_text("Anne Elliot walked to Kellynch Hall and paid twenty pounds.\n")
    model_says(b"\x80\xbf", "Anne paid", b"\xe2\x82\xac", "twenty", b"\xe2\x82")  # stray, a euro sign, cut off
    text = run_cli("ask", book, "Who paid?", "--model", tiny_model_dir, "--device", "cpu")
    assert text.exit_code == 0, text.stderr
    assert text.stdout.splitlines()[0] == "Anne paid\u20ac twenty"
    [row] = json_rows(run_cli("ask", book, "Who paid?", "--json", "--model", tiny_model_dir, "--device", "cpu").stdout)
    assert row["answer"] == "Anne paid\u20ac twenty"
