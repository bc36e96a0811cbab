"""The support check: does the document hold what an answer says?

Cheap and literal: the answer's content words (lower case, stopwords and the question's own words
left out, as recall indexes them) are looked up in the recalled passages shown with it and in the
whole document. An answer none of whose words occur anywhere in the document is "unsupported":
whatever the model meant, it did not read it there. This cannot tell a right answer from a wrong
one built of the document's words; it tells the user when an answer comes from nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from megadoc.pipeline.recall import content_words

SUPPORTED, PARTLY, UNSUPPORTED = "supported", "partly supported", "unsupported"
NOT_FOUND = "not found in the document"


@dataclass(frozen=True)
class Support:
    """`verdict` is SUPPORTED (every content word is in the document), PARTLY or UNSUPPORTED (none
    is); `missing` are the words found nowhere, `in_evidence` those found in the shown passages."""

    verdict: str
    missing: list[str]
    in_evidence: list[str]

    @property
    def note(self) -> str | None:
        """The line a user sees about it, or None when the answer is supported."""
        if self.verdict == UNSUPPORTED:
            return f"{NOT_FOUND}: none of the answer's words ({', '.join(self.missing[:6])}) occur in it"
        if self.verdict == PARTLY:
            return f"partly {NOT_FOUND}: {', '.join(self.missing[:6])} occur nowhere in it"
        return None

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "missing": self.missing, "in_evidence": self.in_evidence}


def check_support(answer: str, question: str, vocabulary: set[str], evidence: Iterable[str]) -> Support | None:
    """How far the document (`vocabulary`: its content words) and the `evidence` texts hold the
    answer's words; None when the answer says nothing beyond the question's words."""
    asked = set(content_words(question))
    words = list(dict.fromkeys(w for w in content_words(answer) if w not in asked))
    if not words:
        return None
    shown = {w for text in evidence for w in content_words(text)}
    missing = [w for w in words if not _known(w, vocabulary)]
    verdict = SUPPORTED if not missing else UNSUPPORTED if len(missing) == len(words) else PARTLY
    return Support(verdict, missing, [w for w in words if _known(w, shown)])


def _known(word: str, words: set[str]) -> bool:
    """`word`, or its singular or plural, is among `words`."""
    forms = {word, word + "s", word + "es", word.removesuffix("s"), word.removesuffix("es")}
    return not forms.isdisjoint(words)
