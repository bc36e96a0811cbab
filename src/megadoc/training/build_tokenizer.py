"""Train the tokenizer of `mini` on the train split of the books plus QMSum train transcripts.

    python -m megadoc.training.build_tokenizer --books ../shared/data/books \\
        --qmsum ../shared/data/qmsum/train --out megadoc/models/mini/tokenizer.model
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from megadoc.engine import Tokenizer, train_tokenizer
from megadoc.training.corpus import (
    HELDOUT_FRACTION,
    SPLIT_SEED,
    load_qmsum_transcripts,
    read_book,
    split_books,
    strip_gutenberg,
)

# Vocabularies of 8192 / 12288 / 16384 give 3.48 / 3.65 / 3.76 bytes per token on held-out
# books: 12288 takes most of the gain while the embedding of a ~30M-parameter model stays a
# minority of its weights (12288 x 512 = 6.3M).
DEFAULT_VOCAB_SIZE = 12288


def sample_books(books: list[Path], budget_bytes: int, seed: int) -> Iterator[str]:
    """An equal, contiguous slice of every book (from a random paragraph), `budget_bytes` in all.

    Many short slices cover more authors and styles than a few whole books of the same size.
    """
    rng = random.Random(seed)
    share = budget_bytes // max(len(books), 1)
    for path in books:
        text = strip_gutenberg(read_book(path))
        start = 0
        if len(text) > share:
            start = text.find("\n\n", rng.randrange(len(text) - share)) + 2
        yield text[start : start + share]


def bytes_per_token(tokenizer: Tokenizer, texts: Iterator[str]) -> float:
    n_bytes = n_tokens = 0
    for text in texts:
        n_bytes += len(text.encode())
        n_tokens += len(tokenizer.encode(text))
    return n_bytes / max(n_tokens, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=Path, required=True, help="folder of Gutenberg .txt.gz books")
    parser.add_argument("--qmsum", type=Path, help="QMSum train/ folder (never val/)")
    parser.add_argument("--out", type=Path, required=True, help="path of the .model file to write")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--sample-mb", type=float, default=40.0, help="book text to train on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train, heldout = split_books(args.books, HELDOUT_FRACTION, SPLIT_SEED)
    with tempfile.TemporaryDirectory() as tmp:
        books_txt = Path(tmp) / "books.txt"
        books_txt.write_text("\n\n".join(sample_books(train, int(args.sample_mb * 2**20), args.seed)))
        files = [books_txt]
        if args.qmsum:
            qmsum_txt = Path(tmp) / "qmsum.txt"
            qmsum_txt.write_text("\n\n".join(load_qmsum_transcripts(args.qmsum)))
            files.append(qmsum_txt)
        model = train_tokenizer(files, Path(tmp) / "tokenizer", args.vocab_size)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, args.out)

    tokenizer = Tokenizer.load(args.out)
    held = bytes_per_token(tokenizer, (strip_gutenberg(read_book(p)) for p in heldout))
    print(
        f"{args.out}: vocab {tokenizer.vocab_size}, id {tokenizer.id}, "
        f"{held:.3f} bytes/token on {len(heldout)} held-out books",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
