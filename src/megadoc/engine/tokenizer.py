"""Sentencepiece tokenizer: encoding with character offsets, streaming decoding, training."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm


class Tokenizer:
    """A sentencepiece model plus `id`, a fingerprint that states and caches record."""

    def __init__(self, processor: spm.SentencePieceProcessor, model_id: str) -> None:
        self._sp = processor
        self.id = model_id
        self.vocab_size: int = processor.vocab_size()
        self.bos_id: int = processor.bos_id()
        self.eos_id: int = processor.eos_id()
        self.pad_id: int = processor.pad_id()  # -1 where the model defines none

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a sentencepiece `.model` file; `id` is the first 16 hex digits of its bytes' sha256."""
        path = Path(path)
        data = path.read_bytes()
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{path}: not a valid sentencepiece .model file (corrupt or truncated?)") from err
        return cls(processor, hashlib.sha256(data).hexdigest()[:16])

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        return self._sp.encode(text, add_bos=bos, add_eos=eos)

    def count(self, text: str) -> int:
        """How many ids `encode(text)` gives."""
        return len(self._sp.encode(text))

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and, for each, the (start, end) character span of `text` it stands for.

        Sentencepiece maps the spans back to the original string in characters (not UTF-8
        bytes). A character split into byte-fallback pieces gets its whole span on its last
        byte piece and empty spans on the others; the dummy-prefix space gets an empty span.
        """
        result = self._sp.encode(text, return_type="offset_mapping")
        return result["ids"], [tuple(span) for span in result["offsets"]]

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)


class IncrementalDecoder:
    """Text from a stream of ids, emitted as soon as it is final.

    Each push decodes a short window: the ids of the previous emission (as context, so that
    sentencepiece places the leading "▁" space exactly as in a full decode) plus the ids not
    yet emitted, and returns what the new ids add. Text ending in U+FFFD is held back: it is a
    UTF-8 character whose remaining byte-fallback pieces have not arrived yet. Byte-fallback
    pieces that never form valid UTF-8 (a stray continuation byte, a character cut off at the
    end) are dropped rather than shown as U+FFFD. The pieces therefore always concatenate to
    `decode(all ids)` without its U+FFFD characters.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._decode = tokenizer.decode
        self._window: list[int] = []
        self._context = 0  # how many ids at the start of the window were already emitted

    def push(self, token_id: int) -> str:
        self._window.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """The held-back text, less any incomplete character."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        done = self._decode(self._window[: self._context])
        text = self._decode(self._window)
        # An id that adds nothing (a control token) must not become the only context:
        # the next piece's space would then be stripped as if it began the text.
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self._window = self._window[self._context :]
        self._context = len(self._window)
        return text[len(done) :].replace("\ufffd", "")


def train_tokenizer(
    text_files: list[Path],
    out_prefix: Path,
    vocab_size: int,
    *,
    byte_fallback: bool = True,
    character_coverage: float = 0.9999,
    max_sentence_length: int = 8192,
) -> Path:
    """Train a BPE sentencepiece model on UTF-8 text files; returns the `.model` path.

    Text is kept exactly as written (identity normalization, spaces and newlines kept), so
    `decode(encode(s)) == s` and offsets point into the original. The files are fed as
    paragraphs with their newlines, not line by line, so line and paragraph breaks get
    pieces of their own. Ids: unk 0, bos 1, eos 2, pad 3. Deterministic for the same input.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_paragraphs(text_files, max_sentence_length),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=byte_fallback,
        character_coverage=character_coverage,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentence_length=max_sentence_length,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    path = out_prefix.parent / f"{out_prefix.name}.model"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def _paragraphs(text_files: list[Path], max_bytes: int) -> Iterator[str]:
    """Paragraphs with their trailing blank lines; long ones cut at line ends to fit `max_bytes`."""
    for path in text_files:
        text = Path(path).read_text(encoding="utf-8")
        for paragraph in re.findall(r".*?(?:\n\s*\n|\Z)", text, re.S):
            piece = ""
            for line in paragraph.splitlines(keepends=True):
                if piece and len((piece + line).encode()) > max_bytes:
                    yield piece
                    piece = ""
                piece += line
            if piece:
                yield piece.encode()[:max_bytes].decode(errors="ignore")  # one over-long line: rare
