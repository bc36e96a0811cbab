"""Evidence recall: BM25 over passages of the document, re-read before answering, and citations.

A recurrent state keeps the gist of a book, not every name in it. So the document is also cut
into passages of a few hundred tokens and indexed with bm25s; before answering, the passages that
best match the question and fit the final attention chunk are fed again, in document order, each
tagged with where it came from ("[p. 12]", "[00:03:10 (Alice)]", "[line 120]"). After the
answer, the recalled passages that best match question + answer are its citations.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# bm25s imports JAX where it is installed and runs a top-k at import, which starts JAX on the GPU
# and with it JAX's default preallocation of 75% of GPU memory: the torch model reading beside it
# then runs out of memory. megadoc scores with bm25s in numpy only, so JAX, unless this process
# started it already or the user chose its platform, stays on the CPU.
if "jax" not in sys.modules:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s  # noqa: E402
import numpy as np  # noqa: E402

from megadoc.pipeline.ingest import Document

# bm25s sets its own logger to DEBUG: once anything gives the root logger a handler (rouge-score's
# absl logging does), every index it builds would print a debug line.
logging.getLogger("bm25s").setLevel(logging.WARNING)

PASSAGE_TOKENS = 200
MIN_PASSAGE_TOKENS = 32
# Passage ends move forward (at most this many tokens) to the next word start.
_SNAP_TOKENS = 16
_STOPWORDS = "en"
QUOTE_CHARS = 200  # an evidence quote: about two lines of a terminal


def passage_size(chunk_size: int) -> int:
    """A few hundred tokens, but at most a quarter of the attention chunk (so several fit), and never
    so few that a passage loses its sentence."""
    return max(MIN_PASSAGE_TOKENS, min(PASSAGE_TOKENS, chunk_size // 4))


@dataclass(frozen=True)
class Passage:
    """Tokens [token_start, token_end) of the document's ids and their characters."""

    token_start: int
    token_end: int
    char_start: int
    char_end: int
    label: str


@dataclass(frozen=True)
class Citation:
    """A cited passage: `char_start`/`char_end` are offsets of Document.source_text (the file as it
    was, which the document view shows); `excerpt` is its normalized text, shortened."""

    label: str
    char_start: int
    char_end: int
    score: float
    excerpt: str

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "score": round(self.score, 4),
            "excerpt": self.excerpt,
        }


@dataclass(frozen=True)
class Evidence:
    """Passages chosen for a question, in document order, and the text that tags them."""

    passages: list[Passage]
    text: str


class PassageIndex:
    """The document's passages and their BM25 index."""

    def __init__(self, document: Document, passages: list[Passage], bm25: bm25s.BM25 | None = None) -> None:
        """Index `passages` (or take `bm25`, their index as saved). A document of stopwords alone has
        no word to index: every query then scores zero."""
        self.document = document
        self.passages = passages
        self._bm25 = bm25
        if bm25 is None and passages:
            tokens = bm25s.tokenize([self.text(p) for p in passages], stopwords=_STOPWORDS, show_progress=False)
            if tokens.vocab:  # tokenized as content_words
                self._bm25 = bm25s.BM25()
                self._bm25.index(tokens, show_progress=False)

    def save(self, directory: Path) -> None:
        """The passages (spans and labels, JSON) and their BM25 index (numpy arrays, no pickle)."""
        directory.mkdir(parents=True)
        spans = [[p.token_start, p.token_end, p.char_start, p.char_end, p.label] for p in self.passages]
        (directory / "passages.json").write_text(json.dumps(spans, ensure_ascii=False), encoding="utf-8")
        if self._bm25 is not None:
            self._bm25.save(str(directory / "bm25"), show_progress=False)

    @classmethod
    def load(cls, directory: Path, document: Document) -> PassageIndex:
        """What `save` wrote, for `document`; ValueError when it does not fit the document."""
        try:
            spans = json.loads((directory / "passages.json").read_text(encoding="utf-8"))
            passages = [Passage(int(a), int(b), int(c), int(d), str(label)) for a, b, c, d, label in spans]
            saved = directory / "bm25"
            bm25 = bm25s.BM25.load(str(saved), show_progress=False) if saved.is_dir() else None
        except (OSError, TypeError, KeyError) as error:
            raise ValueError(f"unreadable passage index ({error})") from None
        if any(not 0 <= p.char_start <= p.char_end <= len(document.text) for p in passages):
            raise ValueError("passage index does not fit the document")
        if bm25 is not None and bm25.scores["num_docs"] != len(passages):
            raise ValueError("passage index does not fit its passages")
        return cls(document, passages, bm25)

    @classmethod
    def build(
        cls, document: Document, offsets: Sequence[tuple[int, int]], size: int, first_token: int = 0
    ) -> PassageIndex:
        """Passages of about `size` tokens over `offsets[first_token:]` (the ids' character spans)."""
        passages = []
        source = document.source_text  # line numbers are the file's, before normalization
        line, counted = 1, 0  # line number of `counted`, kept incrementally for the fallback label
        for start, end in _spans(document, offsets, size, first_token):
            char_start = min(s for s, _ in offsets[start:end])
            char_end = max(e for _, e in offsets[start:end])
            if char_end > char_start:
                label = document.locate(char_start, char_end)
                if not label:
                    source_start, _ = document.source_span(char_start, char_end)
                    line += source.count("\n", counted, source_start)
                    counted = source_start
                    label = f"line {line}"
                passages.append(Passage(start, end, char_start, char_end, label))
        return cls(document, passages)

    def text(self, passage: Passage) -> str:
        return self.document.text[passage.char_start : passage.char_end].strip()

    @property
    def vocabulary(self) -> set[str]:
        """Every word indexed (as `words` spells them): the document's words, stopwords aside."""
        return set() if self._bm25 is None else {word for word in self._bm25.vocab_dict if word}

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (zeros when no query word is indexed)."""
        words = content_words(query)
        if self._bm25 is None or not words:
            return np.zeros(len(self.passages))
        return np.asarray(self._bm25.get_scores(words))

    def evidence(self, query: str, budget: int, count_tokens: Callable[[str], int]) -> Evidence | None:
        """The best-matching passages whose tagged text fits `budget` tokens, in document order.

        At least the best passage is taken even when it alone exceeds the budget. None when no
        passage shares a word with the query."""
        scores = self.scores(query)
        ranked = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        if not ranked:
            return None
        chosen: list[int] = []
        used = 0
        for i in ranked:
            cost = count_tokens(self._tagged(self.passages[i]))
            if chosen and used + cost > budget:
                continue
            chosen.append(int(i))
            used += cost
        passages = [self.passages[i] for i in sorted(chosen)]
        return Evidence(passages, "".join(self._tagged(p) for p in passages).rstrip() + "\n")

    def _tagged(self, passage: Passage) -> str:
        return f"[{passage.label}] {self.text(passage)}\n\n"

    def cite(self, evidence: Evidence, query: str, answer: str, limit: int = 3) -> list[Citation]:
        """The recalled passages that best match the question and the answer, best first, one per label."""
        scores = self.scores(f"{query} {answer}")
        position = {p: i for i, p in enumerate(self.passages)}
        ranked = sorted(evidence.passages, key=lambda p: -scores[position[p]])
        citations: list[Citation] = []
        for passage in ranked:
            score = float(scores[position[passage]])
            if score <= 0 or any(c.label == passage.label for c in citations):
                continue
            excerpt = " ".join(self.text(passage).split())
            excerpt = excerpt if len(excerpt) <= 160 else excerpt[:157] + "..."
            source_start, source_end = self.document.source_span(passage.char_start, passage.char_end)
            citations.append(Citation(passage.label, source_start, source_end, score, excerpt))
            if len(citations) == limit:
                break
        return citations

    def quotes(self, evidence: Evidence, query: str, limit: int = 3) -> list[Citation]:
        """The evidence shown under an answer: the `limit` recalled passages that best match the
        question alone (not the answer, which may be wrong), each as a short quote around the
        question's words; offsets are those of the quote in Document.source_text."""
        return self._quoted(evidence.passages, query, limit)

    def search(self, query: str, limit: int) -> list[Citation]:
        """The `limit` passages of the whole document that best match `query`, quoted as `quotes` does."""
        return self._quoted(self.passages, query, limit)

    def _quoted(self, passages: Sequence[Passage], query: str, limit: int) -> list[Citation]:
        scores = self.scores(query)
        position = {p: i for i, p in enumerate(self.passages)}
        ranked = sorted(passages, key=lambda p: -scores[position[p]])
        wanted = set(content_words(query))
        text, source = self.document.text, self.document.source_text
        quotes = []  # labelled by the quote's own place: its line may be past the passage's first
        for passage in ranked[:limit]:
            score = float(scores[position[passage]])
            if score <= 0:
                break
            start, end = _quote_span(text, passage.char_start, passage.char_end, wanted)
            excerpt = " ".join(text[start:end].split())
            before = text[max(start - 8, 0) : start]
            opens = start == 0 or before.rstrip()[-1:] in _SENTENCE_ENDS or before.endswith("\n")
            excerpt = ("" if opens else "...") + excerpt + ("" if excerpt[-1:] in _SENTENCE_ENDS else "...")
            source_start, source_end = self.document.source_span(start, end)
            label = self.document.locate(start, end) or f"line {source.count(chr(10), 0, source_start) + 1}"
            quotes.append(Citation(label, source_start, source_end, score, excerpt))
        return quotes


def content_words(text: str) -> list[str]:
    """The words of `text` as the index knows them: lower case, of two letters or more, no stopwords."""
    return bm25s.tokenize([text], stopwords=_STOPWORDS, show_progress=False, return_ids=False)[0]


_WORD = re.compile(r"\w+")
_SENTENCE_ENDS = '.!?"\u201d'
_SENTENCE_START = re.compile(r"(?:(?<=[.!?\u201d\"])\s+|\n\n)(?=\S)")


def _quote_span(text: str, begin: int, end: int, wanted: set[str]) -> tuple[int, int]:
    """About QUOTE_CHARS of text[begin:end] holding most of the `wanted` words: from the sentence
    start before the densest stretch (when near), cut at word ends."""
    while begin < end and text[begin].isspace():
        begin += 1
    if end - begin <= QUOTE_CHARS:
        return begin, end
    hits = [m.start() for m in _WORD.finditer(text, begin, end) if m.group().lower() in wanted]
    best = max(hits, key=lambda at: sum(at <= h < at + QUOTE_CHARS for h in hits), default=begin)
    sentence = [m.end() for m in _SENTENCE_START.finditer(text, max(begin, best - QUOTE_CHARS // 3), best)]
    start = sentence[-1] if sentence else best  # else the word itself
    stop = min(start + QUOTE_CHARS, end)
    if stop < end:
        stop = text.rfind(" ", start, stop) if " " in text[start:stop] else stop
    return start, stop


def _spans(document: Document, offsets: Sequence[tuple[int, int]], size: int, first: int) -> Iterator[tuple[int, int]]:
    """Token spans of passages: segments (pages, captions) longer than `size` tokens are cut into
    equal parts at word starts; shorter consecutive ones are joined up to `size`. So a passage
    straddles a segment boundary only where segments are short."""
    starts = [s for s, _ in offsets]
    count = len(starts)
    bounds = sorted({bisect_left(starts, segment.end, first) for segment in document.segments} | {count})
    pending = None  # start of joined short segments not yet emitted
    previous = first
    for bound in (b for b in bounds if b > first):
        if bound - previous > size:
            if pending is not None:
                yield pending, previous
                pending = None
            yield from _equal_parts(document.text, starts, previous, bound, size)
        elif pending is not None and bound - pending > size:
            yield pending, previous
            pending = previous
        elif pending is None:
            pending = previous
        previous = bound
    if pending is not None and previous > pending:
        yield pending, previous


def _equal_parts(text: str, starts: list[int], begin: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """[begin, end) cut into equal parts of at most about `size`, each cut moved to a word start."""
    parts = -(-(end - begin) // size)
    start = begin
    for k in range(1, parts + 1):
        cut = begin + (end - begin) * k // parts
        limit = min(cut + _SNAP_TOKENS, end)
        snapped = cut
        while snapped < limit and starts[snapped] < len(text) and not text[starts[snapped]].isspace():
            snapped += 1
        cut = snapped if snapped < limit or limit == end else cut
        if cut > start:
            yield start, cut
            start = cut
