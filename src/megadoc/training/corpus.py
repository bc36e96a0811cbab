"""Training data for `mini`: Project Gutenberg books and QMSum train meetings.

Plain Python (no torch): cleaning, a stable held-out split, question/answer pairs
built from the books themselves, and QMSum train examples.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from megadoc.pipeline.ingest.meeting import format_transcript
from megadoc.pipeline.names import character_names
from megadoc.training.exclusions import is_evaluation_book

# "*** START OF THIS PROJECT GUTENBERG EBOOK TITLE ***"; long titles wrap onto a second line.
_START = re.compile(
    r"^\*{3} ?START OF (?:THE|THIS) PROJECT GUTENBERG"
    r"(?:[^\n]*\*{3}[ \t]*$|[^\n]*\n[^\n]*\*{3}[ \t]*$|[^\n]*$)",
    re.M | re.I,
)
# Older files end their header with the legal "small print" instead.
_OLD_HEADER_END = re.compile(
    r"^\*+ ?END\*? ?THE SMALL PRINT[^\n]*$|^\*+ *SMALL PRINT! FOR __ COMPLETE SHAKESPEARE[^\n]*$", re.M
)
_FOOTER = re.compile(
    r"^(?:\*{3} ?END OF (?:THE|THIS) PROJECT GUTENBERG|(?:The )?End of (?:the |this )?Project Gutenb[eu]rg"
    r"|End Project Gutenberg|End of this Etext of)",
    re.M | re.I,
)
# The World Library copyright notice repeated through the early Shakespeare files.
_SHAKESPEARE_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS.*?>>\n*", re.S)
# A leading paragraph of transcriber credits or notes about the Project Gutenberg edition.
_CREDITS = re.compile(
    r"\A(?:Produced|E-?text prepared|Prepared|Transcribed|This e-?text)\b"
    r"|gutenberg|e-?text|proofreading team|small print",
    re.I,
)


def read_book(path: Path) -> str:
    """The raw text of a book file (`.txt` or `.txt.gz`)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg text, without licence header, footer or credits."""
    start = _START.search(text)
    if start is None:
        # Only the first half: some modern files repeat the small print after their footer.
        start = _OLD_HEADER_END.search(text, 0, len(text) // 2)
    begin = start.end() if start else 0
    footer = _FOOTER.search(text, begin)
    body = text[begin : footer.start() if footer else len(text)]
    body = _SHAKESPEARE_NOTICE.sub("", body).strip()
    while True:
        paragraph, blank, rest = body.partition("\n\n")
        if not blank or not _CREDITS.search(paragraph):
            return body
        body = rest.strip()


def _title_key(path: Path) -> str:
    # Several books are stored twice, under author and translator (Plato / Jowett-Benjamin);
    # keying on the title alone keeps both copies on the same side of the split.
    title = path.name.split("__", 1)[-1].removesuffix(".gz").removesuffix(".txt")
    return re.sub(r"[^a-z0-9]", "", title.lower())


# The split every consumer of the books uses (tokenizer, pretraining, perplexity).
HELDOUT_FRACTION = 0.05
SPLIT_SEED = 0


def split_books(book_dir: Path, heldout_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Whole books to (train, held-out), by a hash of each title: stable when books are added."""
    train: list[Path] = []
    heldout: list[Path] = []
    for path in sorted(Path(book_dir).glob("*.txt*")):
        digest = hashlib.sha256(f"{seed}:{_title_key(path)}".encode()).digest()
        (heldout if int.from_bytes(digest[:8]) / 2**64 < heldout_fraction else train).append(path)
    return train, heldout


def training_books(book_dir: Path) -> list[Path]:
    """The books that may train the shipped model: split_books' train side, less every book an
    evaluation asks about (exclusions.EVALUATION_BOOKS)."""
    train, _ = split_books(book_dir, HELDOUT_FRACTION, SPLIT_SEED)
    return [path for path in train if not is_evaluation_book(path)]


class QAPair(NamedTuple):
    question: str
    answer: str
    char_offset: int  # where `answer` occurs in the book text that the question was made from


_TITLES = r"(?:(?:Mr|Mrs|Miss|Sir|Lady|Lord|Dr|Captain|Colonel|Madame|Monsieur)\.? )?"
_SPEECH_VERBS = "said|replied|cried|asked|answered|exclaimed|whispered|shouted|continued|added|returned"
_ACTION_VERBS = (
    "went|came|looked|turned|took|gave|ran|walked|sat|stood|saw|found|felt|knew|left|told|"
    "opened|closed|entered|followed|brought|laid|placed|wrote|read|rose|fell|kept|held|met|sent"
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:\n(?!\n)[^.!?\n]*)*[.!?]")
_QUOTE = r"[\"“]([^\"“”\n]{20,160}?)[,!?][\"”]"


def _who_said(text: str, names: set[str]) -> list[QAPair]:
    pattern = re.compile(rf"{_QUOTE} (?:(?:{_SPEECH_VERBS}) ({_TITLES}([A-Z][a-z]+))|({_TITLES}([A-Z][a-z]+)) "
                         rf"(?:{_SPEECH_VERBS}))\b")  # fmt: skip
    pairs = []
    for m in pattern.finditer(text):
        group = 2 if m.group(2) else 4
        if m.group(group + 1) in names:
            pairs.append(QAPair(f'Who said "{m.group(1).strip()}"?', m.group(group), m.start(group)))
    return pairs


def person_names(text: str, names: set[str] | None = None) -> set[str]:
    """The names among `names` (default: `character_names(text)`) that speak a quote or begin a
    sentence with a deed ("Tarzan went ...") at least twice: people, not places."""
    names = character_names(text) if names is None else names
    subjects = Counter(p.answer.split()[-1] for p in _who_said(text, names) + _who_did(text, names))
    return {name for name, count in subjects.items() if count >= 2}


def rename(text: str, mapping: dict[str, str]) -> str:
    """`text` with each whole word that is a key of `mapping` replaced by its value."""
    if not mapping:
        return text
    words = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, mapping), key=len, reverse=True)) + r")\b")
    return words.sub(lambda m: mapping[m.group()], text)


def _who_did(text: str, names: set[str]) -> list[QAPair]:
    pattern = re.compile(
        rf"(?:^|(?<=[.!?] )|(?<=\n))({_TITLES}([A-Z][a-z]+)) ((?:{_ACTION_VERBS}) [^.!?\"“”;:\n]{{15,120}})[.!]"
    )
    pairs = []
    for m in pattern.finditer(text):
        rest = m.group(3)
        # A short tail like "at him" says too little to pick out one moment of the book.
        if m.group(2) in names and len(rest.split()) >= 5:
            pairs.append(QAPair(f"Who {rest}?", m.group(1), m.start(1)))
    return pairs


_RELATIONS = (
    "friend|wife|husband|sister|brother|father|mother|son|daughter|servant|master|mistress|uncle|aunt|"
    "cousin|nephew|niece|lover|companion|guardian|maid|nurse|secretary|partner|grandfather|grandmother"
)
_NAME = rf"({_TITLES}([A-Z][a-z]+))"


def _who_relation(text: str, names: set[str]) -> list[QAPair]:
    """ "Who is A's friend?" -> B and "Who is B?" -> "A's friend", from "A's friend, B", "B, A's
    friend" and "B, the friend of A" (both answers spans of the text)."""
    forms = [  # (pattern, group of A, group of B, group of the relation)
        (re.compile(rf"\b{_NAME}'s ({_RELATIONS}),? {_NAME}\b"), 1, 4, 3),
        (re.compile(rf"\b{_NAME}, {_NAME}'s ({_RELATIONS})\b"), 3, 1, 5),
        (re.compile(rf"\b{_NAME}, ((?:the|his|her) ({_RELATIONS}) of {_NAME})\b"), 5, 1, 4),
    ]
    pairs = []
    for pattern, a, b, relation in forms:
        for m in pattern.finditer(text):
            if m.group(a + 1) not in names or m.group(b + 1) not in names or m.group(a + 1) == m.group(b + 1):
                continue
            pairs.append(QAPair(f"Who is {m.group(a)}'s {m.group(relation)}?", m.group(b), m.start(b)))
            # B's description: the rest of the match, without the comma that joins it to B.
            first, last = (m.end(b) + 2, m.end()) if m.start(b) == m.start() else (m.start(), m.start(b))
            description = text[first:last].rstrip(", ")
            pairs.append(QAPair(f"Who is {m.group(b)}?", description, first))
    return pairs


def _who_is(text: str, names: set[str]) -> list[QAPair]:
    """ "Who is B?" -> "a frontiersman and a soldier", from "B was a frontiersman and a soldier." """
    pattern = re.compile(
        rf"(?:^|(?<=[.!?] )){_NAME} (?:was|is) ((?:a|an|the) (?!first|last|only)[a-z][a-z ,'-]{{8,60}}?)[.;]", re.M
    )
    matches = (m for m in pattern.finditer(text) if m.group(2) in names)
    return [QAPair(f"Who is {m.group(1)}?", m.group(3), m.start(3)) for m in matches]


def _cloze(text: str, names: set[str]) -> list[QAPair]:
    counts = Counter(re.findall(r"\b[a-z]{7,}\b", text))
    pairs = []
    for m in _SENTENCE.finditer(text):
        sentence = m.group().strip()
        if not 40 <= len(sentence) <= 240 or '"' in sentence or "“" in sentence:
            continue
        lead = m.group().index(sentence[0])
        words = list(re.finditer(r"(?<![-'’])\b[A-Za-z]+\b(?![-'’])", sentence))
        # The answer is a character's name or a word used only a few times in the whole book.
        targets = [w for w in words[1:] if w.group() in names or 2 <= counts[w.group()] <= 4]
        if not targets:
            continue
        w = targets[0]
        blanked = " ".join((sentence[: w.start()] + "____" + sentence[w.end() :]).split())
        pairs.append(QAPair(f'Fill in the blank: "{blanked}"', w.group(), m.start() + lead + w.start()))
    return pairs


def make_book_questions(text: str, rng: random.Random, n: int) -> list[QAPair]:
    """Up to `n` questions answerable from `text` (a cleaned book), mixing who-said, who-did, who-is
    (relations and descriptions) and cloze.

    Every answer is a span of `text` at `char_offset`.
    """
    names = character_names(text)
    kinds = [
        _who_said(text, names),
        _who_did(text, names),
        _who_relation(text, names) + _who_is(text, names),
        _cloze(text, names),
    ]
    for pairs in kinds:
        rng.shuffle(pairs)
    chosen: list[QAPair] = []
    seen: set[str] = set()
    while len(chosen) < n and any(kinds):
        for pairs in kinds:
            while pairs and len(chosen) < n:
                pair = pairs.pop()
                if pair.question not in seen:
                    seen.add(pair.question)
                    chosen.append(pair)
                    break
    return chosen


class QMSumExample(NamedTuple):
    transcript: str
    query: str
    answer: str


def _meetings(qmsum_dir: Path) -> Iterator[dict]:
    qmsum_dir = Path(qmsum_dir)
    if qmsum_dir.name == "val":
        raise ValueError(f"{qmsum_dir}: QMSum val/ is the evaluation set; tune on train/ only")
    for path in sorted(qmsum_dir.glob("*.json")):
        yield json.loads(path.read_text(encoding="utf-8"))


def load_qmsum_transcripts(qmsum_dir: Path) -> list[str]:
    """The formatted transcript of every meeting in `qmsum_dir` (the train/ folder)."""
    return [format_transcript(meeting["meeting_transcripts"]) for meeting in _meetings(qmsum_dir)]


def load_qmsum_examples(qmsum_dir: Path) -> list[QMSumExample]:
    """Every general and specific query of the QMSum meetings in `qmsum_dir` (the train/ folder)."""
    examples = []
    for meeting in _meetings(qmsum_dir):
        transcript = format_transcript(meeting["meeting_transcripts"])
        for qa in meeting["general_query_list"] + meeting["specific_query_list"]:
            examples.append(QMSumExample(transcript, qa["query"], qa["answer"]))
    return examples
