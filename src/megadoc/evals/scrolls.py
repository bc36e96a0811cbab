"""SCROLLS examples (NarrativeQA, Qasper, QMSum) from their official formats or SCROLLS' jsonl,
and the reconstructed NarrativeQA full stories of ../shared/data.

SCROLLS' input is ``question + "\\n\\n" + document`` (see ``scrolls_input``). Numbers
comparable with published SCROLLS results need SCROLLS' own jsonl files
(``load_scrolls_jsonl``): the loaders of the original formats rebuild the same
question, references and document text, but the document's exact layout (how a
paper's sections or a transcript's turns are joined) is ours.
"""

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from megadoc.evals.metrics import TASKS
from megadoc.pipeline.ingest.meeting import format_transcript

# SCROLLS' dataset names differ from ours for one task.
_SCROLLS_NAMES = {
    "narrative_qa": "narrativeqa",
    "narrativeqa": "narrativeqa",
    "qasper": "qasper",
    "qmsum": "qmsum",
}
_NARRATIVEQA_SPLITS = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
_QASPER_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}


@dataclass(frozen=True)
class Example:
    """One question (or query) about one document, with its reference answers."""

    id: str
    task: str
    document: str
    question: str
    references: list[str]
    meta: dict = field(default_factory=dict)


def scrolls_input(example: Example) -> str:
    """The input string SCROLLS gives a model: the question, a blank line, the document."""
    return f"{example.question}\n\n{example.document}"


def load_qmsum(directory: str | Path) -> list[Example]:
    """QMSum's original per-meeting JSON files: one example per general and specific query.

    The transcript is ingestion's: one ``Speaker: words`` line per turn, the words as QMSum
    tokenized them (``OK , we 're on .``), its annotation tags (``{vocalsound}``) dropped.
    """
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no QMSum meeting files (*.json) in {directory}")
    examples = []
    for path in files:
        meeting = json.loads(path.read_text(encoding="utf-8"))
        transcript = format_transcript(meeting["meeting_transcripts"])
        for kind in ("general", "specific"):
            for number, item in enumerate(meeting[f"{kind}_query_list"]):
                meta = {"meeting": path.stem, "kind": kind}
                if "relevant_text_span" in item:
                    meta["relevant_text_span"] = item["relevant_text_span"]
                examples.append(
                    Example(
                        f"{path.stem}/{kind}/{number}",
                        "qmsum",
                        transcript,
                        item["query"],
                        [item["answer"]],
                        meta,
                    )
                )
    return examples


def load_narrativeqa(directory: str | Path, split: str) -> list[Example]:
    """NarrativeQA's official layout: documents.csv, qaps.csv and the downloaded stories.

    Stories are ``tmp/<document_id>.content`` (where the official download_stories.sh
    puts them) or ``stories/<document_id>.content``; they are used whole, as
    downloaded (Gutenberg headers and HTML of scripts included). ``split`` is
    train, valid (or validation) or test. References are answer1 and answer2.
    """
    root = Path(directory)
    wanted = _NARRATIVEQA_SPLITS.get(split)
    if wanted is None:
        raise ValueError(f"unknown NarrativeQA split {split!r}; splits: train, valid, test")
    with open(root / "documents.csv", newline="", encoding="utf-8") as f:
        documents = {row["document_id"]: row for row in csv.DictReader(f) if row["set"] == wanted}
    stories: dict[str, str] = {}
    counts: dict[str, int] = {}
    examples = []
    with open(root / "qaps.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["set"] != wanted:
                continue
            doc_id = row["document_id"]
            if doc_id not in stories:
                stories[doc_id] = _read_story(root, doc_id)
            number = counts[doc_id] = counts.get(doc_id, -1) + 1
            info = documents.get(doc_id, {})
            meta = {"document_id": doc_id, "kind": info.get("kind", ""), "title": info.get("wiki_title", "")}
            examples.append(
                Example(
                    f"{doc_id}/{number}",
                    "narrativeqa",
                    stories[doc_id],
                    row["question"],
                    [row["answer1"], row["answer2"]],
                    meta,
                )
            )
    return examples


def load_narrativeqa_fullstory(path: str | Path) -> list[Example]:
    """``fullstory_valid.jsonl.gz`` of ../shared/data/narrativeqa, read as it is: one story a line
    (``document_id``, ``wiki_title``, ``story``, ``qas``: ``question_tokenized`` and two ``answers``).

    A reconstructed subset of SCROLLS NarrativeQA validation (20 Gutenberg books, 589 questions):
    numbers on it are not comparable with published SCROLLS numbers. Line ends are read as Python
    reads a text file (CRLF becomes LF); nothing else of the story changes.
    """
    examples = []
    for row in jsonl_rows(Path(path)):
        story = row["story"].replace("\r\n", "\n")
        meta = {"document_id": row["document_id"], "title": row.get("wiki_title", ""), "kind": "gutenberg"}
        for number, qa in enumerate(row["qas"]):
            examples.append(
                Example(
                    f"{row['document_id']}/{number}",
                    "narrativeqa",
                    story,
                    qa["question_tokenized"],
                    list(qa["answers"]),
                    meta,
                )
            )
    if not examples:
        raise ValueError(f"{path}: no stories")
    return examples


def _read_story(root: Path, doc_id: str) -> str:
    for folder in ("tmp", "stories"):
        path = root / folder / f"{doc_id}.content"
        if path.is_file():
            # Some downloaded stories are not valid UTF-8; a few odd characters do not matter here.
            return path.read_bytes().decode("utf-8", errors="replace")
    raise FileNotFoundError(
        f"NarrativeQA story {doc_id} not found as tmp/{doc_id}.content or stories/{doc_id}.content "
        f"under {root}: run the official download_stories.sh"
    )


def load_qasper(path: str | Path, split: str = "validation") -> list[Example]:
    """Qasper's official JSON (qasper-{train,dev,test}-v0.x.json), a file or the folder holding it.

    The document is the title, the abstract, then each section's name and
    paragraphs. Each annotator's answer becomes one reference text the way Qasper's
    official evaluator (and SCROLLS) turn them into strings: "Unanswerable"; else
    the extractive spans joined with ", "; else the free-form answer; else "Yes" or
    "No".
    """
    papers = json.loads(_qasper_file(Path(path), split).read_text(encoding="utf-8"))
    examples = []
    for paper_id, paper in papers.items():
        document = _qasper_document(paper)
        for qa in paper["qas"]:
            references = [_qasper_answer(a["answer"]) for a in qa["answers"]]
            meta = {"paper_id": paper_id, "title": paper.get("title", "")}
            examples.append(Example(qa["question_id"], "qasper", document, qa["question"], references, meta))
    return examples


def _qasper_file(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    name = _QASPER_SPLITS.get(split)
    if name is None:
        raise ValueError(f"unknown Qasper split {split!r}; splits: train, dev (validation), test")
    matches = sorted(path.glob(f"qasper-{name}-v*.json"))
    if not matches:
        raise FileNotFoundError(f"no qasper-{name}-v*.json in {path}")
    return matches[-1]


def _qasper_document(paper: dict) -> str:
    parts = [paper.get("title", ""), paper.get("abstract", "")]
    for section in paper.get("full_text", []):
        paragraphs = [p for p in section.get("paragraphs", []) if p]
        parts.append("\n".join([section.get("section_name") or "", *paragraphs]).strip())
    return "\n\n".join(part for part in parts if part)


def _qasper_answer(answer: dict) -> str:
    if answer.get("unanswerable"):
        return "Unanswerable"
    if answer.get("extractive_spans"):
        return ", ".join(answer["extractive_spans"])
    if answer.get("free_form_answer"):
        return answer["free_form_answer"]
    if answer.get("yes_no") is not None:
        return "Yes" if answer["yes_no"] else "No"
    raise ValueError(f"Qasper answer without any content: {answer}")


def load_scrolls_jsonl(path: str | Path, task: str | None = None) -> list[Example]:
    """SCROLLS' own jsonl (fields id, pid, input, output), e.g. ``qmsum/validation.jsonl``.

    Rows sharing an id are one example whose references are all their outputs. The
    input is split at its first blank line into question and document, so
    ``scrolls_input`` gives it back unchanged. ``task`` defaults to the SCROLLS
    dataset name found in the path (narrative_qa, qasper, qmsum).
    """
    path = Path(path)
    task = task or _task_from_path(path)
    grouped: dict[str, Example] = {}
    for row in jsonl_rows(path):
        example = grouped.get(row["id"])
        if example is None:
            question, separator, document = row["input"].partition("\n\n")
            if not separator:
                raise ValueError(f"{path}: input of {row['id']} has no blank line between question and document")
            example = grouped[row["id"]] = Example(
                row["id"], task, document, question, [], {"pid": row.get("pid", row["id"])}
            )
        if row.get("output") is not None:
            example.references.append(row["output"])
    return list(grouped.values())


def jsonl_rows(path: Path) -> Iterator[dict]:
    """The JSON objects of a .jsonl or .jsonl.gz file, one a line (blank lines skipped)."""
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _task_from_path(path: Path) -> str:
    for part in reversed(path.parts):
        for scrolls_name, task in _SCROLLS_NAMES.items():
            if scrolls_name in part.lower():
                return task
    raise ValueError(f"cannot tell the task from {path}; pass task= one of {', '.join(TASKS)}")
