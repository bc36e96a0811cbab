"""The names of a book's characters (and places), found by how the text capitalizes them: used by
the who-questions evaluation and by the training rows that ask them."""

from __future__ import annotations

import re
from collections import Counter

_NOT_NAMES = {
    "I", "Mr", "Mrs", "Miss", "Sir", "Lady", "Lord", "Dr", "Captain", "Colonel", "Madame",
    "Monsieur", "God", "Heaven", "Chapter", "CHAPTER", "The", "But", "And", "Oh", "Yes", "No",
}  # fmt: skip


def character_names(text: str, min_count: int = 8) -> set[str]:
    """Capitalized words seen often mid-sentence and hardly ever in lower case: characters, places."""
    mid = Counter(re.findall(r"(?<=[a-z,;] )[A-Z][a-z]{2,}\b", text))
    lower = Counter(w for w in re.findall(r"\b[a-z]{3,}\b", text))
    return {w for w, c in mid.items() if c >= min_count and lower[w.lower()] * 10 < c and w not in _NOT_NAMES}
