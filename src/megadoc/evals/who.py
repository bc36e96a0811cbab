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

from megadoc import prompts
from megadoc.engine import GenerationConfig
from megadoc.pipeline.ingest import load_document
from megadoc.pipeline.names import character_names
from megadoc.pipeline.session import Reader, final_prompt


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


def run_who(
    reader: Reader,
    books: Path,
    questions: list[WhoQuestion],
    config: GenerationConfig,
    recall: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[WhoResult]:
    """Ask every question of its book (each book read once); answers are the first line generated."""
    results = []
    by_book: dict[str, list[WhoQuestion]] = {}
    for question in questions:
        by_book.setdefault(question.book, []).append(question)
    for book, asked in by_book.items():
        read = reader.read(load_document(find_book(books, book)))
        names = character_names(read.document.text)
        for question in asked:
            response = reader.ask(read, question.question, config, recall=recall)
            answer = response.collect().strip().split("\n", 1)[0].strip()
            evidence = _evidence(reader, read, question.question, config)
            floor = _most_frequent_name(evidence, {name for name in names if name not in question.question})
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
                    [c.label for c in response.citations],
                )
            )
            if on_progress is not None:
                on_progress(len(results), len(questions))
    return results


def _evidence(reader: Reader, read, question: str, config: GenerationConfig) -> str:
    """The passages recall puts before `question` (the app's default), "" when none match."""
    before, after = prompts.split("qa", question=question)
    chunk = reader.model.config.chunk_size
    _, evidence = final_prompt(
        read.passages, "", before, after, question, chunk, config.max_new_tokens, reader.tokenizer.count
    )
    return "" if evidence is None else evidence.text


def _most_frequent_name(evidence: str, names: set[str]) -> str:
    """The most frequent of `names` in `evidence` ("" if none occurs)."""
    counts = {name: len(re.findall(rf"\b{name}\b", evidence)) for name in names}
    best = max(counts, key=lambda name: (counts[name], name), default="")
    return best if counts.get(best) else ""
