"""Training data for `mini`: `python -m megadoc.training.rows pretrain|tune ...`.

pretrain: the training split of the books (Gutenberg headers stripped, hard line wraps joined),
tokenized into uint16 shards, documents separated by EOS.
heldout: the held-out books, cleaned the same way, as .txt files for perplexity.
tune: (document, question, answer) rows in exactly the layout the app feeds at inference:
    [BOS] before + document up to its last chunk boundary | final prompt | answer [EOS]
where the final prompt is, as in megadoc.pipeline.session.final_prompt, either the document's tail and the
prompt's `after` part (--no-recall) or `before`, the passages BM25 recalls for the question, and
`after` (recall, the app's default; RECALL_FRACTION of the rows). Questions come from QMSum train
(query-focused summaries, in the app's and SCROLLS' prompts) and from questions built from the
books by our own code, whose answers are spans of the text. In each book row the book's characters
take names of other books' characters (one random mapping per row, applied to the
window, the question and the answer), so the answer can only come from reading the row, not from
what pretraining remembers of the book. Stored as one flat id array with row offsets and answer
starts.
"""

from __future__ import annotations

import argparse
import random
import re
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

from megadoc import prompts
from megadoc.engine import MegalodonConfig, Tokenizer
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.names import character_names
from megadoc.pipeline.recall import PassageIndex, passage_size
from megadoc.pipeline.session import final_prompt
from megadoc.training.corpus import (
    HELDOUT_FRACTION,
    SPLIT_SEED,
    QMSumExample,
    load_qmsum_examples,
    make_book_questions,
    person_names,
    read_book,
    rename,
    split_books,
    strip_gutenberg,
)

# Each QMSum train query is a row in the app's summary prompt and in SCROLLS' ("Query: ... Answer:"):
# tuned on the first only, the model answered SCROLLS queries like the books' who-questions, in a word.
QMSUM_TEMPLATES = ("query_summary", "scrolls_qmsum")
# Share of tuning rows in the recall layout (the app's default); the rest read the document's tail.
RECALL_FRACTION = 0.75
CHUNK_SIZE = MegalodonConfig.preset("mini").chunk_size
_WRAPPED_LINE = re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)")


def clean_book(path: Path) -> str:
    """A book's body with hard line wraps inside paragraphs joined (paragraph breaks kept)."""
    return _WRAPPED_LINE.sub(" ", strip_gutenberg(read_book(path)))


def prompt_ids(
    tokenizer: Tokenizer, template: str, document: str, question: str, recall: bool, chunk_size: int = CHUNK_SIZE
) -> tuple[list[int], list[int]]:
    """(ids the state reads: BOS, the template's `before` and the document up to the last chunk
    boundary; ids of the final prompt) exactly as megadoc.pipeline.session feeds them, with or without recall."""
    slot = "query" if "query" in prompts.slots(template) else "question"
    before, after = prompts.split(template, **{slot: question})
    text = before + document
    ids, offsets = tokenizer.encode_with_offsets(text)
    ids, offsets = [tokenizer.bos_id, *ids], [(0, 0), *offsets]
    boundary = len(ids) // chunk_size * chunk_size
    tail = text[offsets[boundary][0] :] if boundary < len(ids) else ""
    passages = None
    if recall:
        doc = Document(text, [], source="tuning", kind="text")
        passages = PassageIndex.build(doc, offsets, passage_size(chunk_size), first_token=1)
    # The answer reserve of a long answer: a quarter of the chunk (megadoc.pipeline.session.ANSWER_RESERVE_FRACTION).
    prompt, _ = final_prompt(
        passages, tail, before, after, question if recall else None, chunk_size, chunk_size, tokenizer.count
    )
    final = tokenizer.encode(prompt)
    return ids[:boundary], [tokenizer.bos_id, *final] if boundary == 0 else final


@cache
def _worker_tokenizer(path: str) -> Tokenizer:
    """The tokenizer, loaded once per worker process (the pool's jobs name it by path)."""
    return Tokenizer.load(path)


def _tokenize_book(args: tuple[str, str]) -> np.ndarray:
    path, tokenizer_path = args
    tokenizer = _worker_tokenizer(tokenizer_path)
    return np.array([*tokenizer.encode(clean_book(Path(path))), tokenizer.eos_id], dtype=np.uint16)


def prepare_pretrain(books: Path, tokenizer_path: Path, out: Path, shard_tokens: int = 16_000_000) -> int:
    """Tokenize the training split of `books` into new shards of `out`, after any already there: the
    books can come in parts (a GPU call carries at most 64 MiB), each part tokenized once."""
    train, _ = split_books(books, HELDOUT_FRACTION, SPLIT_SEED)
    out.mkdir(parents=True, exist_ok=True)
    shard, size, total = [], 0, 0
    index = 1 + max((int(path.stem.removeprefix("shard")) for path in out.glob("shard*.npy")), default=-1)
    with ProcessPoolExecutor() as pool:
        for ids in pool.map(_tokenize_book, [(str(p), str(tokenizer_path)) for p in train], chunksize=4):
            shard.append(ids)
            size += len(ids)
            if size >= shard_tokens:
                np.save(out / f"shard{index:03d}.npy", np.concatenate(shard))
                total, shard, size, index = total + size, [], 0, index + 1
    if shard:
        np.save(out / f"shard{index:03d}.npy", np.concatenate(shard))
        total += size
    return total


def _book_people(path: str) -> set[str]:
    return person_names(clean_book(Path(path)))


def _book_rows(args: tuple[str, str, int, int, tuple[str, ...]]) -> list[tuple[list[int], int]]:
    """Rows asking questions about a window of one book that ends after the answer, the book's
    characters renamed with names drawn from `pool` (other books' characters)."""
    path, tokenizer_path, per_book, seed, pool = args
    tokenizer = _worker_tokenizer(tokenizer_path)
    text = clean_book(Path(path))
    names = character_names(text)
    people = sorted(person_names(text, names))
    strangers = [name for name in pool if name not in names]
    if len(strangers) < len(people):
        raise ValueError(f"{path}: {len(people)} people to rename, only {len(strangers)} names from other books")
    rng = random.Random(f"{seed}:{path}")
    rows = []
    for pair in make_book_questions(text, rng, per_book):
        # Half the answers sit near the end (as recalled evidence would), half far back in the window.
        after_answer = rng.randint(0, 2000) if rng.random() < 0.5 else rng.randint(4000, 30000)
        end = min(len(text), pair.char_offset + len(pair.answer) + after_answer)
        start = max(0, end - rng.randint(20000, 60000))
        recall = rng.random() < RECALL_FRACTION
        mapping = dict(zip(people, rng.sample(strangers, len(people)), strict=True))
        window, question = rename(text[start:end], mapping), rename(pair.question, mapping)
        context, question_ids = prompt_ids(tokenizer, "qa", window, question, recall)
        answer = tokenizer.encode(" " + rename(pair.answer, mapping)) + [tokenizer.eos_id]
        rows.append(([*context, *question_ids, *answer], len(context) + len(question_ids)))
    return rows


def _qmsum_row(args: tuple[QMSumExample, str, bool, str]) -> tuple[list[int], int]:
    example, template, recall, tokenizer_path = args
    tokenizer = _worker_tokenizer(tokenizer_path)
    answer = tokenizer.encode(" " + example.answer.strip()) + [tokenizer.eos_id]
    context, question_ids = prompt_ids(tokenizer, template, example.transcript, example.query, recall)
    return [*context, *question_ids, *answer], len(context) + len(question_ids)


def prepare_tune(books: Path, qmsum_train: Path, tokenizer_path: Path, out: Path, per_book: int, seed: int) -> int:
    rows: list[tuple[list[int], int]] = []
    rng = random.Random(seed)
    jobs = [
        (example, template, rng.random() < RECALL_FRACTION, str(tokenizer_path))
        for example in load_qmsum_examples(qmsum_train)
        for template in QMSUM_TEMPLATES
    ]
    train, _ = split_books(books, HELDOUT_FRACTION, SPLIT_SEED)
    with ProcessPoolExecutor() as workers:
        rows.extend(workers.map(_qmsum_row, jobs, chunksize=8))
        names = tuple(sorted(set().union(*workers.map(_book_people, map(str, train), chunksize=4))))
        book_jobs = [(str(p), str(tokenizer_path), per_book, seed, names) for p in train]
        for book_rows in workers.map(_book_rows, book_jobs, chunksize=4):
            rows.extend(book_rows)
    random.Random(seed).shuffle(rows)
    lengths = np.array([len(ids) for ids, _ in rows])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    answer_starts = offsets[:-1] + np.array([start for _, start in rows])
    ids = np.concatenate([np.array(r, dtype=np.uint16) for r, _ in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, ids=ids, offsets=offsets, answer_starts=answer_starts)
    return len(rows)


def write_heldout(books: Path, out: Path) -> int:
    """The held-out books, cleaned exactly as training text is, as .txt files (for `megadoc eval ppl`)."""
    _, heldout = split_books(books, HELDOUT_FRACTION, SPLIT_SEED)
    out.mkdir(parents=True, exist_ok=True)
    for path in heldout:
        (out / path.name.removesuffix(".gz")).write_text(clean_book(path), encoding="utf-8")
    return len(heldout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["pretrain", "tune", "heldout"])
    parser.add_argument("--books", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, help="sentencepiece model (pretrain, tune)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--qmsum", type=Path, help="QMSum train/ (tune)")
    parser.add_argument("--per-book", type=int, default=40, help="questions per book (tune)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.stage == "heldout":
        print(f"{write_heldout(args.books, args.out)} held-out books in {args.out}")
    elif args.stage == "pretrain":
        print(f"{prepare_pretrain(args.books, args.tokenizer, args.out)} tokens in {args.out}")
    else:
        if args.qmsum is None:
            parser.error("tune needs --qmsum")
        count = prepare_tune(args.books, args.qmsum, args.tokenizer, args.out, args.per_book, args.seed)
        print(f"{count} rows in {args.out}")


if __name__ == "__main__":
    main()
