import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from megadoc.engine import Tokenizer
from megadoc.engine.tokenizer import IncrementalDecoder, train_tokenizer
from tests.helpers import DATA

TEXTS = [
    "Sir Walter Elliot, of Kellynch Hall, was a man who read the Baronetage.",
    "  two leading spaces,\n\nparagraphs,\ttabs   and trailing space \n",
    "Café, naïve, Ærøskøbing, Zürich — “curly quotes” and the €5 note.",
    "東京で会いましょう。 😀👍🏽 mixed with English, 한국어, and ελληνικά.",
    "Numbers 1234567 and 3.14159 split into digits.",
]
# Text sentencepiece can encode: anything but lone surrogates.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module")
def tok(sp_model_path: Path) -> Tokenizer:
    return Tokenizer.load(sp_model_path)


def test_special_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size == 500
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
    ids = tok.encode("Anne", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "Anne"


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=any_text)
def test_round_trip_any_text(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_unknown_characters_fall_back_to_bytes(tok: Tokenizer, sp_model_path: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(sp_model_path))
    pieces = [sp.id_to_piece(i) for i in tok.encode("😀")]
    assert "<0xF0>" in pieces and sp.unk_id() not in tok.encode(TEXTS[3])


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_map_pieces_to_their_text(tok: Tokenizer, sp_model_path: Path, text: str) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(sp_model_path))
    ids, offsets = tok.encode_with_offsets(text)
    assert ids == tok.encode(text)
    assert "".join(text[a:b] for a, b in offsets) == text  # contiguous, in order, whole text
    for i, (piece_id, (a, b)) in enumerate(zip(ids, offsets, strict=True)):
        if sp.is_byte(piece_id):
            continue  # a char's bytes: the last one carries the char's span, checked below
        surface = sp.id_to_piece(piece_id).replace("▁", " ")
        # The first piece carries the dummy-prefix space that is not in the text.
        assert text[a:b] == (surface[1:] if i == 0 and a == 0 else surface)
    for ch in ["€", "😀", "東"]:
        if ch in text:
            start = text.index(ch)
            assert (start, start + 1) in offsets  # character, not byte, offsets


def _stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tok)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_decoder_matches_decode(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    parts = _stream(tok, ids)
    assert "".join(parts) == tok.decode(ids) == text
    assert not any("\ufffd" in part for part in parts)


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_incremental_decoder_any_text(tok: Tokenizer, text: str) -> None:
    parts = _stream(tok, tok.encode(text))
    assert "".join(parts) == text
    assert "\ufffd" in text or not any("\ufffd" in part for part in parts)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.integers(0, 499), max_size=16))
def test_incremental_decoder_any_ids(tok: Tokenizer, ids: list[int]) -> None:
    # Control tokens, stray bytes and "▁" pieces in any order: still exactly decode(ids), less the
    # U+FFFD of byte pieces that never form valid UTF-8 (never shown).
    assert "".join(_stream(tok, ids)) == tok.decode(ids).replace("\ufffd", "")


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"not a model" * 50])
def test_corrupt_model_file_is_a_clear_error(sp_model_path: Path, tmp_path: Path, damage) -> None:
    bad = tmp_path / "bad.model"
    bad.write_bytes(damage(sp_model_path.read_bytes()))
    with pytest.raises(ValueError, match="bad.model: not a valid sentencepiece") as err:
        Tokenizer.load(bad)
    assert "\n" not in str(err.value)


def test_id_fingerprints_the_file(sp_model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.model"
    shutil.copyfile(sp_model_path, copy)
    other = train_tokenizer([DATA / "austen_persuasion_excerpt.txt"], tmp_path / "other", 400)
    first = Tokenizer.load(sp_model_path).id
    assert len(first) == 16 and Tokenizer.load(copy).id == first
    assert Tokenizer.load(other).id != first


def test_training_is_deterministic(sp_model_path: Path, tmp_path: Path) -> None:
    again = train_tokenizer([DATA / "austen_persuasion_excerpt.txt"], tmp_path / "again", 500)
    assert again.read_bytes() == sp_model_path.read_bytes()
