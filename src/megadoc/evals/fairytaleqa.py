"""FairytaleQA (github.com/uci-soe/FairytaleQAData): questions about children's stories.

Read from the data's ``fairytaleqa_by_split.tar.gz`` as it is (members are read, never extracted) or
from the unpacked folder: ``data-by-train-split/section-stories/<split>/<story>-story.csv`` (section,
text) and ``.../questions/<split>/<story>-questions.csv`` (question, answer1 ... answer6). The
document is the story's sections joined by blank lines; every non-empty answer column is a reference.
"""

import csv
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from megadoc.evals.scrolls import Example

_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
_ANSWERS = tuple(f"answer{i}" for i in range(1, 7))


def load_fairytaleqa(path: str | Path, split: str = "validation") -> list[Example]:
    """One example per question of ``split`` (train, validation or test), ids ``<story>/<question_id>``."""
    wanted = _SPLITS.get(split)
    if wanted is None:
        raise ValueError(f"unknown FairytaleQA split {split!r}; splits: train, validation, test")
    stories: dict[str, str] = {}
    questions: dict[str, list[dict]] = {}
    for name, text in _split_files(Path(path), wanted):
        rows = list(csv.DictReader(io.StringIO(text)))
        if name.endswith("-story.csv"):
            stories[name.removesuffix("-story.csv")] = "\n\n".join(row["text"].strip() for row in rows)
        elif name.endswith("-questions.csv"):
            questions[name.removesuffix("-questions.csv")] = rows
    if not questions:
        raise ValueError(f"{path}: no FairytaleQA questions of the {wanted} split")
    examples = []
    for story, rows in sorted(questions.items()):
        if story not in stories:
            raise ValueError(f"{path}: questions about {story} but no {story}-story.csv")
        for row in rows:
            references = [row[key].strip() for key in _ANSWERS if (row.get(key) or "").strip()]
            meta = {"story": story, "attribute": row.get("attribute1", ""), "local_or_sum": row.get("local-or-sum", "")}
            examples.append(
                Example(
                    f"{story}/{row['question_id']}", "fairytaleqa", stories[story], row["question"], references, meta
                )
            )
    return examples


def _split_files(path: Path, split: str) -> Iterator[tuple[str, str]]:
    """(file name, text) of every CSV of the split, from the tar.gz or the folder."""
    marks = (f"/questions/{split}/", f"/section-stories/{split}/")
    if path.is_file():
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".csv") and any(m in member.name for m in marks):
                    yield Path(member.name).name, archive.extractfile(member).read().decode("utf-8")
        return
    for file in sorted(path.rglob("*.csv")):
        if any(m in file.as_posix() for m in marks):
            yield file.name, file.read_text(encoding="utf-8")
