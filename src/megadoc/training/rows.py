"""Training data for `mini`: `python -m megadoc.training.rows pretrain|tune ...`.

pretrain: the training books (corpus.training_books), each read as the app reads it (ingestion's
text: megadoc.pipeline.ingest.load_document, which joins hard line wraps) with the Gutenberg header
stripped, except RAW_FRACTION of them kept as the files come (wrapped lines), so the model also
reads what normalization cannot fix; tokenized into uint16 shards, documents separated by EOS.
heldout: the held-out books, read as the app reads them, as .txt files for perplexity.
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
import hashlib
import random
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

from megadoc import prompts
from megadoc.engine import MegalodonConfig, Tokenizer
from megadoc.pipeline.ingest import Document, load_document
from megadoc.pipeline.names import character_names
from megadoc.pipeline.recall import PassageIndex, passage_size
from megadoc.pipeline.session import final_prompt
from megadoc.training.corpus import (
    HELDOUT_FRACTION,
    SPLIT_SEED,
    load_qmsum_examples,
    make_book_questions,
    person_names,
    read_book,
    rename,
    split_books,
    strip_gutenberg,
    training_books,
)
from megadoc.training.reading import load_reading_sets

# Each QMSum train query is a row in the app's summary prompt and in SCROLLS' ("Query: ... Answer:"):
# tuned on the first only, the model answered SCROLLS queries like the books' who-questions, in a word.
QMSUM_TEMPLATES = ("query_summary", "scrolls_qmsum")
# Share of tuning rows in the recall layout (the app's default); the rest read the document's tail.
RECALL_FRACTION = 0.75
CHUNK_SIZE = MegalodonConfig.preset("mini").chunk_size
# Share of the pretraining books kept with their hard line wraps (a stable choice by file name).
RAW_FRACTION = 0.1


def clean_book(path: Path) -> str:
    """A book's body as the app reads it: ingestion's normalized text, Gutenberg header stripped."""
    return strip_gutenberg(load_document(path).text)


def kept_raw(path: Path, fraction: float = RAW_FRACTION) -> bool:
    """Whether pretraining reads `path` as the file comes (wrapped lines), not normalized."""
    digest = hashlib.sha256(f"raw:{path.name}".encode()).digest()
    return int.from_bytes(digest[:8]) / 2**64 < fraction


def pretraining_text(path: Path) -> str:
    return strip_gutenberg(read_book(path)) if kept_raw(path) else clean_book(path)


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
    return np.array([*tokenizer.encode(pretraining_text(Path(path))), tokenizer.eos_id], dtype=np.uint16)


def select_books(books: list[Path], only: Path | None = None, part: tuple[int, int] = (1, 1)) -> list[Path]:
    """`books` limited to the file names in the first column of `only` (a TSV such as
    books/ADDED-2026-12-04.tsv), then to part k of n (every n-th book from the k-th)."""
    if only is not None:
        names = {line.split("\t", 1)[0] for line in only.read_text(encoding="utf-8").splitlines()[1:]}
        books = [path for path in books if path.name in names]
    k, n = part
    return books[k - 1 :: n]


def prepare_pretrain(
    books: Path,
    tokenizer_path: Path,
    out: Path,
    shard_tokens: int = 16_000_000,
    only: Path | None = None,
    part: tuple[int, int] = (1, 1),
) -> int:
    """Tokenize the training books of `books` (`select_books`) into new shards of `out`, after any
    already there: the books can come in parts (a GPU call carries at most 64 MiB)."""
    train = select_books(training_books(books), only, part)
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


def _book_rows(args: tuple[str, str, int, int, tuple[str, ...], int | None]) -> list[tuple[list[int], int]]:
    """Rows asking questions about a window of one book that ends after the answer, the book's
    characters renamed with names drawn from `pool` (other books' characters). A row in the recall
    layout is kept only when its recalled passages hold the answer, so the answer is copied from
    what the model has just re-read; the other rows answer from the state's reading."""
    path, tokenizer_path, per_book, seed, pool, keep_chunks = args
    tokenizer = _worker_tokenizer(tokenizer_path)
    text = clean_book(Path(path))
    names = character_names(text)
    people = sorted(person_names(text, names))
    strangers = [name for name in pool if name not in names]
    if len(strangers) < len(people):
        raise ValueError(f"{path}: {len(people)} people to rename, only {len(strangers)} names from other books")
    rng = random.Random(f"{seed}:{path}")
    rows = []
    for pair in make_book_questions(text, rng, 2 * per_book):
        if len(rows) == per_book:
            break
        # Half the answers sit near the end (as recalled evidence would), half far back in the window.
        after_answer = rng.randint(0, 2000) if rng.random() < 0.5 else rng.randint(4000, 30000)
        end = min(len(text), pair.char_offset + len(pair.answer) + after_answer)
        start = max(0, end - rng.randint(20000, 60000))
        recall = rng.random() < RECALL_FRACTION
        mapping = dict(zip(people, rng.sample(strangers, len(people)), strict=True))
        window, question = rename(text[start:end], mapping), rename(pair.question, mapping)
        answer_text = rename(pair.answer, mapping)
        context, question_ids = prompt_ids(tokenizer, "qa", window, question, recall)
        if recall and answer_text not in tokenizer.decode(question_ids):
            continue
        answer = tokenizer.encode(" " + answer_text) + [tokenizer.eos_id]
        rows.append(make_row(context, question_ids, answer, keep_chunks))
    return rows


def _example_row(args: tuple[str, str, str, str, bool, str, int | None]) -> tuple[list[int], int]:
    """A row asking `question` of `document` in `template`, answered with `answer`."""
    document, question, answer, template, recall, tokenizer_path, keep_chunks = args
    tokenizer = _worker_tokenizer(tokenizer_path)
    answer_ids = tokenizer.encode(" " + answer.strip()) + [tokenizer.eos_id]
    context, question_ids = prompt_ids(tokenizer, template, document, question, recall)
    return make_row(context, question_ids, answer_ids, keep_chunks)


def make_row(
    context: list[int], question_ids: list[int], answer_ids: list[int], keep_chunks: int | None = None
) -> tuple[list[int], int]:
    """(ids, answer start) of a row; with `keep_chunks`, the context (which ends at a chunk
    boundary) loses its whole chunks beyond the last `keep_chunks`, so every kept token keeps its
    place in its chunk: what a tuning stage of short windows would drop anyway is not stored."""
    if keep_chunks is not None:
        context = context[max(0, len(context) - keep_chunks * CHUNK_SIZE) :]
    return [*context, *question_ids, *answer_ids], len(context) + len(question_ids)


def _jobs(examples, templates, rng: random.Random, tokenizer_path: Path, keep_chunks: int | None) -> list[tuple]:
    return [
        (document, question, answer, template, rng.random() < RECALL_FRACTION, str(tokenizer_path), keep_chunks)
        for document, question, answer, template in examples
        for template in templates(template)
    ]


def prepare_tune(
    books: Path,
    qmsum_train: Path | None,
    tokenizer_path: Path,
    out: Path,
    per_book: int,
    seed: int,
    reading: Path | None = None,
    book_sample: int | None = None,
    keep_chunks: int | None = None,
    boolq_rows: int = 3000,
) -> dict[str, int]:
    """Tuning rows in one .npz, in the order made (rows of one document side by side, which
    compresses them well for carrying; training draws rows at random): QMSum train in both its
    prompts (given `qmsum_train`), `per_book` questions of each training book (of a random
    `book_sample` of them), and with `reading` (../shared/data) the reading-comprehension
    training sets (BoolQ cut to `boolq_rows`). Returns the rows per source."""
    rng = random.Random(seed)
    sources: dict[str, list[tuple]] = {}
    if qmsum_train is not None:
        qmsum = ((e.transcript, e.query, e.answer, "") for e in load_qmsum_examples(qmsum_train))
        sources["qmsum"] = _jobs(qmsum, lambda _: QMSUM_TEMPLATES, rng, tokenizer_path, keep_chunks)
    if reading is not None:
        examples = load_reading_sets(reading)
        boolq = [e for e in examples if e.source == "boolq"]
        examples = [e for e in examples if e.source != "boolq"] + rng.sample(boolq, min(boolq_rows, len(boolq)))
        for name in sorted({e.source for e in examples}):
            chosen = ((e.document, e.question, e.answer, e.template) for e in examples if e.source == name)
            sources[name] = _jobs(chosen, lambda template: (template,), rng, tokenizer_path, keep_chunks)
    train = training_books(books)
    if book_sample is not None:
        train = sorted(random.Random(seed).sample(train, min(book_sample, len(train))))
    rows: list[tuple[list[int], int]] = []
    counts: dict[str, int] = {}
    with ProcessPoolExecutor() as workers:
        for name, jobs in sources.items():
            made = list(workers.map(_example_row, jobs, chunksize=8))
            rows.extend(made)
            counts[name] = len(made)
        if per_book:
            names = tuple(sorted(set().union(*workers.map(_book_people, map(str, train), chunksize=4))))
            book_jobs = [(str(p), str(tokenizer_path), per_book, seed, names, keep_chunks) for p in train]
            made = [row for book_rows in workers.map(_book_rows, book_jobs, chunksize=2) for row in book_rows]
            rows.extend(made)
            counts["books"] = len(made)
    write_rows(rows, out)
    return counts


def write_rows(rows: list[tuple[list[int], int]], out: Path) -> None:
    """Rows as one flat uint16 id array with row offsets and answer starts (TuneRows reads it)."""
    lengths = np.array([len(ids) for ids, _ in rows])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    answer_starts = offsets[:-1] + np.array([start for _, start in rows])
    ids = np.concatenate([np.array(r, dtype=np.uint16) for r, _ in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, ids=ids, offsets=offsets, answer_starts=answer_starts)


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
    parser.add_argument("--only", type=Path, help="a TSV whose first column names the books to use (pretrain)")
    parser.add_argument("--part", default="1/1", help="K/N: every N-th selected book from the K-th (pretrain)")
    parser.add_argument("--reading", type=Path, help="../shared/data: add the reading-comprehension sets (tune)")
    parser.add_argument("--book-sample", type=int, help="ask questions of this many random training books (tune)")
    parser.add_argument("--keep-chunks", type=int, help="store at most this many context chunks a row (tune)")
    args = parser.parse_args(argv)
    if args.stage == "heldout":
        print(f"{write_heldout(args.books, args.out)} held-out books in {args.out}")
    elif args.stage == "pretrain":
        k, n = (int(x) for x in args.part.split("/"))
        total = prepare_pretrain(args.books, args.tokenizer, args.out, only=args.only, part=(k, n))
        print(f"{total} tokens in {args.out}")
    else:
        counts = prepare_tune(
            args.books,
            args.qmsum,
            args.tokenizer,
            args.out,
            args.per_book,
            args.seed,
            reading=args.reading,
            book_sample=args.book_sample,
            keep_chunks=args.keep_chunks,
        )
        print(f"{sum(counts.values())} rows in {args.out}: {counts}")


if __name__ == "__main__":
    main()
