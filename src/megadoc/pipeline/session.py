"""The pipeline from a Document to answers: tokenize, read (cached, resumable), then respond.

Reading is the expensive part and happens once per document: the state the model is left in at
the last chunk boundary goes to the state cache, checkpointed every few chunks while reading. A
question never changes that state: it works on a clone, feeding either the document's tail (the
tokens after the boundary) or recalled evidence, then the prompt, inside the final chunk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial

from megadoc import prompts
from megadoc.engine import GenerationConfig, State, continuation_logprobs, stream_text
from megadoc.pipeline.cache import StateCache, cache_key
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.names import answer_names, character_names
from megadoc.pipeline.recall import Citation, Evidence, PassageIndex, passage_size
from megadoc.pipeline.registry import LoadedModel
from megadoc.pipeline.support import Support, check_support

CHECKPOINT_CHUNKS = 8
# Tokens of the final chunk kept free for the answer when recalled evidence fills it.
ANSWER_RESERVE_FRACTION = 4

ProgressCallback = Callable[[int, int], None]


class ReadInterrupted(KeyboardInterrupt):
    """Ctrl-C during a read; `tokens_saved` tokens are in the cache for the next run to resume."""

    def __init__(self, tokens_saved: int) -> None:
        super().__init__(tokens_saved)
        self.tokens_saved = tokens_saved


@dataclass
class ReadDocument:
    """A document as read: its ids (BOS first) with character spans, the state at the last chunk
    boundary (never mutated: questions clone it) and its passage index, made on first use."""

    document: Document
    ids: list[int]
    offsets: list[tuple[int, int]]
    state: State
    tokens_read: int  # tokens the model read in this run (0 when the cache had it all)
    status: str  # "read", "resumed" or "cached"
    seconds: dict[str, float] = field(default_factory=dict)
    # Loads or builds the passage index; returns it and "cached" or "built".
    index_loader: Callable[[], tuple[PassageIndex, str]] | None = field(default=None, repr=False)
    index_status: str | None = None  # "cached" or "built", once the index is made
    _passages: PassageIndex | None = field(default=None, repr=False)

    @property
    def passages(self) -> PassageIndex:
        """The passage index: loaded from the state cache, else built (and saved), when first
        needed; its seconds go to `seconds["index"]`."""
        if self._passages is None:
            start = time.perf_counter()
            assert self.index_loader is not None
            self._passages, self.index_status = self.index_loader()
            self.seconds["index"] = time.perf_counter() - start
        return self._passages

    @cached_property
    def names(self) -> set[str]:
        """The document's character (and place) names, found once."""
        return character_names(self.document.text)

    @property
    def tail_text(self) -> str:
        """The document's text after the last chunk boundary, which the state has not seen."""
        position = self.state.position
        return self.document.text[self.offsets[position][0] :] if position < len(self.ids) else ""


@dataclass(frozen=True)
class Grounding:
    """What backs an answer: its citations (recalled passages matching question and answer), the
    evidence shown with it (quotes of the passages matching the question) and the support check."""

    citations: list[Citation] = field(default_factory=list)
    evidence: list[Citation] = field(default_factory=list)
    support: Support | None = None


class Response:
    """Generated text as a stream of pieces; after iteration, the whole text and its grounding.
    `names`: the names a name answer was chosen from (None when the model wrote the answer)."""

    def __init__(
        self, pieces: Iterator[str], finish: Callable[[str], Grounding], names: list[str] | None = None
    ) -> None:
        self._pieces, self._finish, self.names = pieces, finish, names
        self.text = ""
        self.grounding = Grounding()
        self.seconds = 0.0
        self.first_piece_seconds: float | None = None

    @property
    def citations(self) -> list[Citation]:
        return self.grounding.citations

    @property
    def evidence(self) -> list[Citation]:
        return self.grounding.evidence

    @property
    def support(self) -> Support | None:
        return self.grounding.support

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        for piece in self._pieces:
            if self.first_piece_seconds is None:
                self.first_piece_seconds = time.perf_counter() - start
            self.text += piece
            yield piece
        self.grounding = self._finish(self.text)
        self.seconds = time.perf_counter() - start

    def collect(self) -> str:
        for _ in self:
            pass
        return self.text


def final_prompt(
    passages: PassageIndex | None,
    tail_text: str,
    before: str,
    after: str,
    recall_query: str | None,
    chunk_size: int,
    max_new_tokens: int,
    count_tokens: Callable[[str], int],
) -> tuple[str, Evidence | None]:
    """The text fed after the read state: the document's tail and the prompt, or with `recall_query`
    the recalled evidence in its place (`before` + evidence + `after`, sized to leave room for the
    answer in the final chunk; `passages` may be None without a query). The tuning rows of
    megadoc.training.rows are made by this function too, so training sees what the app feeds."""
    evidence = None
    if recall_query is not None and passages is not None:
        reserve = min(max_new_tokens, chunk_size // ANSWER_RESERVE_FRACTION)
        budget = chunk_size - count_tokens(before + after) - reserve
        evidence = passages.evidence(recall_query, budget, count_tokens)
    if evidence is None:
        return tail_text + after, None
    return before + evidence.text + after, evidence


class Reader:
    """Reads documents with one model, through an optional state cache."""

    def __init__(
        self,
        loaded: LoadedModel,
        cache: StateCache | None,
        *,
        checkpoint_chunks: int = CHECKPOINT_CHUNKS,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.cache = cache
        self.checkpoint_tokens = checkpoint_chunks * self.model.config.chunk_size
        self.warn = warn

    def read(self, document: Document, on_progress: ProgressCallback | None = None) -> ReadDocument:
        """Tokenize and read `document`, resuming from or reusing the cache.

        Raises ReadInterrupted on Ctrl-C, after saving what was read."""
        start = time.perf_counter()
        identity = {
            "model": self.loaded.fingerprint,
            "tokenizer": self.tokenizer.id,
            "document": document.content_hash(),
        }
        key = cache_key(identity["model"], identity["tokenizer"], identity["document"])
        tokens = None if self.cache is None else self.cache.load_tokens(key, identity, len(document.text))
        if tokens is None:
            tokens = self._tokenize(document)
            if self.cache is not None:
                self.cache.save_tokens(key, identity, *tokens)
        ids, offsets = tokens
        tokenized = time.perf_counter()
        if self.cache is None:
            state, status, tokens_read = self._read_uncached(ids, on_progress)
        else:
            state, status, tokens_read = self._read_cached(key, identity, ids, document, on_progress)
        seconds = {"tokenize": tokenized - start, "read": time.perf_counter() - tokenized}
        loader = partial(self._passage_index, key, identity, document, offsets)
        return ReadDocument(document, ids, offsets, state, tokens_read, status, seconds, loader)

    def _passage_index(
        self, key: str, identity: dict[str, str], document: Document, offsets: list[tuple[int, int]]
    ) -> tuple[PassageIndex, str]:
        cached = None if self.cache is None else self.cache.load_passages(key, identity, document)
        if cached is not None:
            return cached, "cached"
        index = PassageIndex.build(document, offsets, passage_size(self.model.config.chunk_size), first_token=1)
        if self.cache is not None:
            self.cache.save_passages(key, identity, index)
        return index, "built"

    def _tokenize(self, document: Document) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets = self.tokenizer.encode_with_offsets(document.text)
        if self.tokenizer.bos_id >= 0:
            ids, offsets = [self.tokenizer.bos_id, *ids], [(0, 0), *offsets]
        return ids, offsets

    def _read_uncached(self, ids: list[int], on_progress: ProgressCallback | None) -> tuple[State, str, int]:
        state = self.model.new_state()
        try:
            self.model.read(ids, state, on_chunk=on_progress)
        except KeyboardInterrupt:
            raise ReadInterrupted(0) from None
        return state, "read", state.position

    def _read_cached(
        self,
        key: str,
        identity: dict[str, str],
        ids: list[int],
        document: Document,
        on_progress: ProgressCallback | None,
    ) -> tuple[State, str, int]:
        assert self.cache is not None
        waiting = "another megadoc process is reading this document; waiting for it"
        with self.cache.lock(key, on_wait=lambda: self.warn(waiting)):
            state = self._usable(self.cache.load(key, identity, self.model.new_state(), self.warn), ids)
            if state is not None and state.metadata.get("complete"):
                return state, "cached", 0
            status = "read" if state is None else "resumed"
            if state is None:
                state = self.model.new_state()
                state.metadata = {
                    **identity,
                    "model_name": self.loaded.name,
                    "source": document.source if document.source == "-" else os.path.abspath(document.source),
                    "title": document.title or "",
                    "kind": document.kind,
                    "tokens_total": len(ids),
                    "complete": False,
                }
            begin = state.position
            self._read_checkpointed(key, ids, state, on_progress)
            state.metadata["complete"] = True
            self.cache.save(key, state)
            return state, status, state.position - begin

    def _usable(self, state: State | None, ids: list[int]) -> State | None:
        """A loaded state that belongs to exactly these ids (a chunk boundary within them)."""
        if state is None:
            return None
        chunk = self.model.config.chunk_size
        if state.metadata.get("tokens_total") != len(ids) or state.position % chunk or state.position > len(ids):
            self.warn("discarding a cached state that does not fit this document's tokens; reading it again")
            return None
        return state

    def _read_checkpointed(self, key: str, ids: list[int], state: State, on_progress: ProgressCallback | None) -> None:
        """`model.read` from `state.position`, saving a checkpoint every few chunks; on Ctrl-C,
        saving the last consistent state (a clone taken after each call) and raising ReadInterrupted."""
        assert self.cache is not None
        begin, total = state.position, len(ids)
        saved = begin
        consistent: State | None = None

        def on_chunk(done: int, _: int) -> None:
            nonlocal saved, consistent
            consistent = state.clone()
            if state.position - saved >= self.checkpoint_tokens:
                self.cache.save(key, state)
                saved = state.position
            if on_progress is not None:
                on_progress(state.position, total)

        if on_progress is not None:
            on_progress(begin, total)
        try:
            self.model.read(ids[begin:], state, on_chunk=on_chunk)
        except KeyboardInterrupt:
            if consistent is not None and consistent.position > saved:
                self.cache.save(key, consistent)
                saved = consistent.position
            raise ReadInterrupted(saved) from None
        if on_progress is not None:
            on_progress(total, total)

    # -- responding ----------------------------------------------------------------------------

    def respond(
        self,
        read: ReadDocument,
        template: str,
        config: GenerationConfig,
        *,
        recall_query: str | None = None,
        **slots: str,
    ) -> Response:
        """Text generated after the document and the prompt `template` (filled with `slots`).

        With `recall_query`, recalled evidence replaces the document's tail in the final chunk
        and the response gets citations; when nothing matches the query, the tail is used."""
        prompt_ids, evidence = self._prompt(read, template, config, recall_query, **slots)
        asked = slots.get("question") or slots.get("query") or ""
        return self._written(read, prompt_ids, evidence, recall_query, asked, config)

    def _written(
        self,
        read: ReadDocument,
        prompt_ids: list[int],
        evidence: Evidence | None,
        recall_query: str | None,
        asked: str,
        config: GenerationConfig,
    ) -> Response:
        """The model's own text after `prompt_ids`, grounded in `evidence`."""
        pieces = stream_text(self.model, self.tokenizer, prompt_ids, read.state.clone(), config)
        return Response(pieces, lambda text: _grounding(read.passages, evidence, recall_query, asked, text))

    def _prompt(
        self, read: ReadDocument, template: str, config: GenerationConfig, recall_query: str | None, **slots: str
    ) -> tuple[list[int], Evidence | None]:
        """The ids fed after the read state (`final_prompt`'s text) and the evidence among them."""
        before, after = prompts.split(template, **slots)
        prompt, evidence = final_prompt(
            read.passages if recall_query is not None else None,
            read.tail_text,
            before,
            after,
            recall_query,
            self.model.config.chunk_size,
            config.max_new_tokens,
            self.tokenizer.count,
        )
        prompt_ids = self.tokenizer.encode(prompt)
        if read.state.position == 0 and self.tokenizer.bos_id >= 0:
            prompt_ids = [self.tokenizer.bos_id, *prompt_ids]  # nothing read yet, not even BOS
        return prompt_ids, evidence

    def ask(
        self, read: ReadDocument, question: str, config: GenerationConfig, recall: bool = True, names: bool = True
    ) -> Response:
        """The answer to `question`. With recall and `names`, a question asking for a person is
        answered with the name, among those of the recalled passages that the question does not use
        (`answer_names`), that the model finds likeliest right after the prompt: a who-question's
        answer is a name, and the model chooses it rather than writes it. It writes the answer when
        the passages name no one."""
        recall_query = question if recall else None
        prompt_ids, evidence = self._prompt(read, "qa", config, recall_query, question=question)
        candidates = answer_names(question, evidence.text, read.names) if names and evidence is not None else []
        if not candidates:
            return self._written(read, prompt_ids, evidence, recall_query, question, config)
        continuations = [self.tokenizer.encode(" " + name) for name in candidates]
        scores = continuation_logprobs(self.model, prompt_ids, read.state, continuations)
        best = max(zip(scores, candidates, strict=True))[1]
        return Response(
            iter([best]), lambda text: _grounding(read.passages, evidence, question, question, text), candidates
        )

    def summarize(
        self, read: ReadDocument, config: GenerationConfig, query: str | None = None, recall: bool = True
    ) -> Response:
        if query is None:
            return self.respond(read, "summary", config)
        return self.respond(read, "query_summary", config, recall_query=query if recall else None, query=query)


def _grounding(
    passages: PassageIndex, evidence: Evidence | None, query: str | None, asked: str, answer: str
) -> Grounding:
    """Citations and evidence quotes (with recall only), and the support check of `answer`."""
    citations, quotes = [], []
    if evidence is not None and query is not None:
        citations, quotes = passages.cite(evidence, query, answer), passages.quotes(evidence, query)
    shown = [passages.text(p) for p in evidence.passages] if evidence is not None else []
    return Grounding(citations, quotes, check_support(answer, asked, passages.vocabulary, shown))
