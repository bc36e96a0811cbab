"""What never trains the shipped model: the books the evaluations ask about, and every split
that is not a training split. Explicit lists, so a test can check them against the evaluation
files (megadoc.evals' who-question sets) without training importing the evaluations."""

from __future__ import annotations

from pathlib import Path

# Every book of megadoc/evals/who_questions*.json (file names without .txt/.txt.gz). They are
# held out by split_books' hash too; the list keeps them out should the split ever change.
EVALUATION_BOOKS = frozenset(
    {
        "Burroughs-Edgar-Rice__Tarzan-and-the-Golden-Lion",
        "Carroll-Lewis__Alice-s-Adventures-in-WonderlandIllustrated-by-Arthur-Rackham-With-a-Proem-by-Au",
        "Cervantes-Saavedra-Miguel-de__Don-Quixote",
        "Ibsen-Henrik__Rosmersholm",
        "Ibsen-Henrik__The-Lady-from-the-Sea",
        "Shaw-Bernard__The-Man-of-Destiny",
        "Shelley-Mary-Wollstonecraft__Frankenstein-Or-The-Modern-Prometheus",
        "Stevenson-Robert-Louis__Catriona",
    }
)
# Split names that are evaluation data in every set (QMSum val, SQuALITY dev, FairytaleQA val/test,
# MCTest dev/test, BoolQ val/test).
EVALUATION_SPLITS = frozenset({"val", "valid", "validation", "dev", "test", "tst", "challenge"})
# Whole data sets that are evaluation-only (../shared/data/README.md).
EVALUATION_SETS = frozenset({"narrativeqa", "xquad", "leval", "quail", "friendsqa"})


def book_stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".txt")


def is_evaluation_book(path: Path) -> bool:
    return book_stem(path) in EVALUATION_BOOKS


def check_training_split(split: str, source: str) -> None:
    """Raise ValueError unless `split` of `source` may train the shipped model."""
    if split.lower() in EVALUATION_SPLITS or source.lower() in EVALUATION_SETS:
        raise ValueError(f"{source} {split}: evaluation data, never used for training")
