"""Who-questions about novels never trained on: does `megadoc ask` name the right character?

The questions (who_questions.json) were written from knowledge of the books, each answered by a
name; an answer counts when it contains an accepted name as whole words, ignoring case. Beside
the model stands a floor that reads nothing: the book's most frequent character name inside the
passages that recall puts before the question (names the question itself uses left out). A model
that only echoes a salient name of its evidence scores that floor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from megadoc import prompts
from megadoc.engine import GenerationConfig
from megadoc.pipeline.ingest import Document, load_document
from megadoc.pipeline.names import answer_names, character_names, name_counts
from megadoc.pipeline.session import ProgressCallback, ReadDocument, Reader, final_prompt


@dataclass(frozen=True)
class WhoQuestion:
    book: str  # file name without extension, e.g. "Shelley-Mary-Wollstonecraft__Frankenstein-Or-The-Modern-Prometheus"
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class WhoResult:
    book: str
    question: str
    answers: tuple[str, ...]
    answer: str
    correct: bool
    floor_answer: str
    floor_correct: bool
    in_evidence: bool  # an accepted name is in the recalled passages: what reading them could find
    citations: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def load_questions(path: Path | None = None) -> list[WhoQuestion]:
    """The questions of `path`, or of the who_questions.json shipped with megadoc."""
    text = path.read_text(encoding="utf-8") if path else (files("megadoc.evals") / "who_questions.json").read_text()
    rows = json.loads(text)["questions"]
    return [WhoQuestion(row["book"], row["question"], tuple(row["answers"])) for row in rows]


def names_answer(answer: str, accepted: tuple[str, ...]) -> bool:
    """True when `answer` contains one of the accepted names as whole words, ignoring case."""
    return any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer, re.I) for name in accepted)


def find_book(books: Path, book: str) -> Path:
    for suffix in (".txt", ".txt.gz"):
        if (books / f"{book}{suffix}").is_file():
            return books / f"{book}{suffix}"
    raise FileNotFoundError(f"{books}: no {book}.txt or {book}.txt.gz")


class Asker(Protocol):
    """Whoever answers: megadoc's reader, or a Hugging Face model (``HFAsker``)."""

    def open(self, document: Document) -> Any:
        """Whatever the questions about `document` share (megadoc: the read state)."""

    def ask(self, opened: Any, question: str) -> tuple[str, str, list[str]]:
        """(the answer's first line, the document text the answer could see, citation labels)."""


class MegadocAsker:
    """`megadoc ask`: the read state, then the question after the recalled passages (or the tail)."""

    def __init__(
        self,
        reader: Reader,
        config: GenerationConfig,
        recall: bool,
        on_read: ProgressCallback | None = None,
        names: bool = True,
    ) -> None:
        self.reader, self.config, self.recall, self.on_read, self.names = reader, config, recall, on_read, names

    def open(self, document: Document) -> ReadDocument:
        return self.reader.read(document, self.on_read)

    def ask(self, read: ReadDocument, question: str) -> tuple[str, str, list[str]]:
        response = self.reader.ask(read, question, self.config, recall=self.recall, names=self.names)
        answer = response.collect().strip().split("\n", 1)[0].strip()
        return answer, _evidence(self.reader, read, question, self.config), [c.label for c in response.citations]


class HFAsker:
    """A Hugging Face model (megadoc.evals.hf.HFPredictor) asked the app's question prompt; what it
    could see is the document's head or, with recall, its recalled passages. With `names`, a
    question asking for a person is answered as megadoc's are: the model chooses among the names of
    what it was shown."""

    def __init__(self, predictor: Any, max_new_tokens: int, names: bool = False) -> None:
        self.predictor, self.max_new_tokens, self.names = predictor, max_new_tokens, names

    def open(self, document: Document) -> tuple[str, set[str]]:
        return document.text, character_names(document.text) if self.names else set()

    def ask(self, opened: tuple[str, set[str]], question: str) -> tuple[str, str, list[str]]:
        text, names = opened
        prompt = self.predictor.prompt(text, question, "qa", self.max_new_tokens)
        candidates = answer_names(question, prompt.context, names)
        if candidates:
            return self.predictor.choose(prompt, candidates), prompt.context, []
        generated = self.predictor.generate(prompt.ids, self.max_new_tokens)
        return generated.strip().split("\n", 1)[0].strip(), prompt.context, []


def run_who(
    asker: Asker,
    books: Path,
    questions: list[WhoQuestion],
    on_progress: Callable[[int, int], None] | None = None,
) -> list[WhoResult]:
    """Ask every question of its book (each book opened once). The floor and `in_evidence` look at
    what the asker could see: megadoc's recalled passages, or the text a Hugging Face model was fed."""
    results = []
    by_book: dict[str, list[WhoQuestion]] = {}
    for question in questions:
        by_book.setdefault(question.book, []).append(question)
    for book, asked in by_book.items():
        document = load_document(find_book(books, book))
        opened = asker.open(document)
        names = character_names(document.text)
        for question in asked:
            answer, evidence, citations = asker.ask(opened, question.question)
            floor = _most_frequent_name(name_counts(evidence, names, question.question))
            results.append(
                WhoResult(
                    book,
                    question.question,
                    question.answers,
                    answer,
                    names_answer(answer, question.answers),
                    floor,
                    names_answer(floor, question.answers),
                    names_answer(evidence, question.answers),
                    citations,
                )
            )
            if on_progress is not None:
                on_progress(len(results), len(questions))
    return results


def _evidence(reader: Reader, read: ReadDocument, question: str, config: GenerationConfig) -> str:
    """The passages recall puts before `question` (the app's default), "" when none match."""
    before, after = prompts.split("qa", question=question)
    chunk = reader.model.config.chunk_size
    _, evidence = final_prompt(
        read.passages, "", before, after, question, chunk, config.max_new_tokens, reader.tokenizer.count
    )
    return "" if evidence is None else evidence.text


def _most_frequent_name(counts: dict[str, int]) -> str:
    """The name of `counts` seen most often ("" if none)."""
    return max(counts, key=lambda name: (counts[name], name), default="")
