"""The names of a book's characters (and places), found by how the text capitalizes them: used by
who-questions (the app's name answers, the evaluation's floor) and by the training rows that ask them."""

from __future__ import annotations

import re
from collections import Counter

_NOT_NAMES = {
    "I", "Mr", "Mrs", "Miss", "Sir", "Lady", "Lord", "Dr", "Captain", "Colonel", "Madame",
    "Monsieur", "God", "Heaven", "Chapter", "CHAPTER", "The", "But", "And", "Oh", "Yes", "No",
}  # fmt: skip
_ASKS_FOR_A_PERSON = re.compile(r"\s*(?:who|whom|whose)\b", re.I)
_ABOUT_A_NAMED_PERSON = re.compile(r"\s*who\s+(?:is|was|are|were)\s+(.+?)[\s?.!]*", re.I)
_NAME_JOINERS = {"and", "or", "of", "de", "da", "di", "du", "la", "van", "von"}  # "Harville and Benwick"


def character_names(text: str, min_count: int = 8) -> set[str]:
    """Capitalized words seen often mid-sentence and hardly ever in lower case: characters, places."""
    mid = Counter(re.findall(r"(?<=[a-z,;] )[A-Z][a-z]{2,}\b", text))
    lower = Counter(w for w in re.findall(r"\b[a-z]{3,}\b", text))
    return {w for w, c in mid.items() if c >= min_count and lower[w.lower()] * 10 < c and w not in _NOT_NAMES}


def asks_for_a_name(question: str) -> bool:
    """A who-question whose answer is a name ("Who is Tarzan's wife?"), not one about a person it
    names ("Who is Captain Wentworth?"), which wants a description."""
    if not _ASKS_FOR_A_PERSON.match(question):
        return False
    about = _ABOUT_A_NAMED_PERSON.fullmatch(question)
    return not (about and all(word[:1].isupper() or word in _NAME_JOINERS for word in about.group(1).split()))


def name_counts(text: str, names: set[str], leaving_out: str = "") -> dict[str, int]:
    """How often each of `names` occurs in `text` as a whole word, for those that do and that
    `leaving_out` (the question) does not use."""
    counts = {name: len(re.findall(rf"\b{re.escape(name)}\b", text)) for name in names}
    return {name: n for name, n in counts.items() if n and not re.search(rf"\b{re.escape(name)}\b", leaving_out)}


def answer_names(question: str, shown: str, names: set[str]) -> list[str]:
    """The names a name answer to `question` chooses from: those of `names` in `shown` (what the
    model was shown) that the question does not use, when it asks for a person; else none."""
    return sorted(name_counts(shown, names, question)) if asks_for_a_name(question) else []
