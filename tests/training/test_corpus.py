import random
import re
from pathlib import Path

import numpy as np
import pytest

from megadoc.engine import Tokenizer
from megadoc.training.corpus import (
    _who_is,
    _who_relation,
    load_qmsum_examples,
    load_qmsum_transcripts,
    make_book_questions,
    person_names,
    read_book,
    rename,
    split_books,
    strip_gutenberg,
)
from megadoc.training.rows import _book_rows, clean_book, prepare_pretrain, prepare_tune
from tests.helpers import SHARED_DATA

DATA = SHARED_DATA
BOOKS = DATA / "books"
QMSUM_TRAIN = DATA / "qmsum" / "train"
needs_books = pytest.mark.skipif(not BOOKS.is_dir(), reason=f"shared books not found at {BOOKS}")
needs_qmsum = pytest.mark.skipif(not QMSUM_TRAIN.is_dir(), reason=f"QMSum train not found at {QMSUM_TRAIN}")
LICENCE = re.compile(r"\*\*\* ?(?:START|END) OF|SMALL PRINT\b|Project Gutenberg-tm|THIS ELECTRONIC VERSION", re.I)


def _book(name: str) -> str:
    return strip_gutenberg(read_book(BOOKS / f"{name}.txt.gz"))


@needs_books
@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        # modern "*** START OF THIS PROJECT GUTENBERG EBOOK" header
        ("Austen-Jane__Persuasion", "Persuasion", "national importance.\n\n\n\nFinis"),
        # "***START OF THE PROJECT GUTENBERG EBOOK" without a space, and an "E-text prepared by" credit
        ("Chekhov-Anton-Pavlovich__The-Duel-and-Other-Stories", "THE DUEL AND OTHER STORIES", None),
        # old "*END*THE SMALL PRINT" header, "End of this Project Gutenberg Etext" footer
        ("Jowett-Benjamin__Crito", "CRITO\n\nby Plato", "follow\nwhither he leads."),
        # early Shakespeare: small print "FOR __ COMPLETE SHAKESPEARE" and repeated <<copyright>> notices
        ("Shakespeare-William__Cymbeline", "1609\n\nCYMBELINE", "with such a peace.      Exeunt\n\nTHE END"),
    ],
)
def test_strip_gutenberg_real_books(name: str, first: str, last: str | None) -> None:
    body = _book(name)
    assert body.startswith(first)
    if last:
        assert body.endswith(last)
    assert not LICENCE.search(body)


@needs_books
def test_strip_gutenberg_keeps_the_body_of_many_books() -> None:
    for path in sorted(BOOKS.glob("*.txt.gz"))[::25]:
        raw = read_book(path)
        body = strip_gutenberg(raw)
        assert not LICENCE.search(body), path.name
        assert body and all(part in raw for part in body.split("\n\n"))  # cut, never rewritten
        assert len(body) > len(raw) - 25_000, path.name  # the licence text is at most ~20 KB


def test_split_is_stable_disjoint_and_keeps_titles_together(tmp_path: Path) -> None:
    names = [f"Author-{i % 7}__Title-{i}.txt.gz" for i in range(400)]
    names += ["Plato__Cratylus.txt.gz", "Jowett-Benjamin__Cratylus.txt.gz"]
    for name in names:
        (tmp_path / name).touch()
    train, heldout = split_books(tmp_path, 0.1, seed=0)
    assert not set(train) & set(heldout) and len(train) + len(heldout) == len(names)
    assert 20 <= len(heldout) <= 60
    assert split_books(tmp_path, 0.1, seed=0) == (train, heldout)
    cratylus = [p for p in train + heldout if p.name.endswith("Cratylus.txt.gz")]
    assert len({p in heldout for p in cratylus}) == 1  # same book under author and translator
    for i in range(400, 500):  # new books do not move old ones
        (tmp_path / f"Author-x__Title-{i}.txt.gz").touch()
    train2, heldout2 = split_books(tmp_path, 0.1, seed=0)
    assert set(train) <= set(train2) and set(heldout) <= set(heldout2)
    assert split_books(tmp_path, 0.1, seed=1) != (train2, heldout2)


@needs_books
def test_split_of_the_shared_books() -> None:
    train, heldout = split_books(BOOKS, 0.05, seed=0)
    assert len(train) + len(heldout) == len(list(BOOKS.glob("*.txt.gz")))
    assert 0.02 < len(heldout) / (len(train) + len(heldout)) < 0.1


@needs_books
@pytest.mark.parametrize("name", ["Austen-Jane__Persuasion", "Doyle-Arthur-Conan__A-Study-in-Scarlet"])
def test_book_questions_are_answered_by_the_text(name: str) -> None:
    text = _book(name)
    pairs = make_book_questions(text, random.Random(0), 30)
    assert len(pairs) == 30
    assert pairs == make_book_questions(text, random.Random(0), 30)
    assert len({p.question for p in pairs}) == 30
    for p in pairs:
        assert text[p.char_offset : p.char_offset + len(p.answer)] == p.answer, p
        assert p.answer not in {"I", "The", "He", "She"}
    kinds = {p.question.split()[0] for p in pairs}
    assert kinds == {"Who", "Fill"}
    who_said = [p for p in pairs if p.question.startswith('Who said "')]
    for p in who_said:  # the quote is from the book, close to the speaker's name
        quote = p.question[len('Who said "') : -2]
        assert quote in text[p.char_offset - 300 : p.char_offset + 300], p
    for p in pairs:
        if p.question.startswith("Fill in the blank"):
            sentence = p.question.split('"', 1)[1][:-1].replace("____", p.answer)
            window = " ".join(text[p.char_offset - 300 : p.char_offset + 300].split())
            assert sentence in window, p


def test_relation_and_description_questions_answer_with_spans() -> None:
    text = (
        "They met at the inn. Anne's sister, Mary, came late. Later Henry, Victor's friend, spoke. "
        "Clerval, the friend of Victor, laughed. Victor was a young student from the north. "
        "Mary was the first to leave. Henry's dog, Rover, barked."
    )
    names = {"Anne", "Mary", "Henry", "Victor", "Clerval"}  # not Rover: a relation joins two names
    pairs = _who_relation(text, names) + _who_is(text, names)
    assert {(p.question, p.answer) for p in pairs} == {
        ("Who is Anne's sister?", "Mary"),
        ("Who is Mary?", "Anne's sister"),
        ("Who is Victor's friend?", "Henry"),
        ("Who is Henry?", "Victor's friend"),
        ("Who is Victor's friend?", "Clerval"),
        ("Who is Clerval?", "the friend of Victor"),
        ("Who is Victor?", "a young student from the north"),  # not "Mary": "the first to" describes nobody
    }
    for p in pairs:
        assert text[p.char_offset : p.char_offset + len(p.answer)] == p.answer, p


@needs_qmsum
def test_qmsum_train_loads() -> None:
    examples = load_qmsum_examples(QMSUM_TRAIN)
    assert len(examples) > 1000  # 162 meetings, one general and several specific queries each
    transcript, query, answer = examples[0]
    assert query and answer
    first = transcript.splitlines()[0]
    assert re.match(r"[^:\n]+: \S", first)
    assert "{disfmarker}" not in transcript and "{vocalsound}" not in transcript
    assert len(load_qmsum_transcripts(QMSUM_TRAIN)) == len(list(QMSUM_TRAIN.glob("*.json")))


def test_qmsum_refuses_the_validation_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="evaluation set"):
        load_qmsum_examples(tmp_path / "val")


@needs_qmsum
def test_tuning_rows_ask_each_qmsum_query_in_both_prompts(tmp_path: Path, sp_model_path: Path) -> None:
    """QMSum rows come in the app's summary prompt and in SCROLLS' (the eval's), answer scored only."""
    meetings = tmp_path / "train"
    meetings.mkdir()
    first = sorted(QMSUM_TRAIN.glob("*.json"))[0]
    (meetings / first.name).write_bytes(first.read_bytes())
    queries = len(load_qmsum_examples(meetings))
    out = tmp_path / "tune.npz"
    counts = prepare_tune(tmp_path / "no-books", meetings, sp_model_path, out, per_book=1, seed=0)
    assert counts == {"qmsum": 2 * queries, "books": 0}
    data = np.load(out)
    tokenizer = Tokenizer.load(sp_model_path)
    prompts_seen, answers = set(), set()
    for start, end, answer in zip(data["offsets"][:-1], data["offsets"][1:], data["answer_starts"], strict=True):
        prompt = tokenizer.decode(data["ids"][start:answer].tolist())
        prompts_seen.add("Request:" if "\nRequest: " in prompt else "Query:" if "\nQuery: " in prompt else "?")
        answers.add(tokenizer.decode(data["ids"][answer:end].tolist()).strip())
    assert prompts_seen == {"Request:", "Query:"}
    assert len(answers) == len({e.answer.strip() for e in load_qmsum_examples(meetings)})


def test_rename_replaces_whole_words_only() -> None:
    mapping = {"Anne": "Tess", "Ann": "Ruth"}
    assert rename("Anne met Ann; Annex and Anne's hat.", mapping) == "Tess met Ruth; Annex and Tess's hat."
    assert rename("no names", {}) == "no names"


@needs_books
def test_person_names_are_people() -> None:
    people = person_names(clean_book(BOOKS / "Austen-Jane__Persuasion.txt.gz"))
    assert {"Anne", "Wentworth", "Elizabeth"} <= people
    assert not people & {"Bath", "Lyme", "Kellynch"}  # places the book names as often


@needs_books
def test_book_rows_rename_the_characters_consistently(sp_model_path: Path) -> None:
    """Each row's window, question and answer use names from the pool in place of the book's own."""
    path = BOOKS / "Austen-Jane__Persuasion.txt.gz"
    pool = (
        "Zorbin",
        "Quillan",
        "Marlow",
        "Trevik",
        "Odessa",
        "Brannoc",
        "Ysolde",
        "Kestrel",
        "Fenwick",
        "Halvard",
        "Isembard",
        "Jorunn",
        "Lisandro",
        "Perpetua",
    )
    rows = _book_rows((str(path), str(sp_model_path), 12, 0, pool, None))
    assert len(rows) == 12
    tokenizer = Tokenizer.load(sp_model_path)
    people = person_names(clean_book(path))
    renamed_answers = 0
    for ids, answer_start in rows:
        prompt, reply = tokenizer.decode(ids[:answer_start]), tokenizer.decode(ids[answer_start:]).strip()
        words = set(re.findall(r"[A-Z][a-z]+", prompt + " " + reply))
        assert not words & people, words & people
        assert " ".join(reply.split()) in " ".join(prompt.split())  # still a span of what the row shows
        renamed_answers += bool(set(reply.split()) & set(pool))
    assert renamed_answers >= 3  # who-said / who-did answers are pool names now
    with pytest.raises(ValueError, match="people to rename"):
        _book_rows((str(path), str(sp_model_path), 12, 0, pool[:3], None))


def test_books_tokenized_in_parts_add_shards(tmp_path: Path, sp_model_path: Path) -> None:
    """Each part of the books becomes new shards beside the earlier parts' (none overwritten)."""
    tokenizer = Tokenizer.load(sp_model_path)
    texts = {"A": "Anne walked to the harbour at Lyme.", "B": "Captain Wentworth wrote a letter."}
    for part, text in texts.items():
        (tmp_path / part).mkdir()
        (tmp_path / part / f"Someone__Book-{part}.txt").write_text(text + "\n", encoding="utf-8")
    tokens = tmp_path / "tokens"
    counts = [prepare_pretrain(tmp_path / part, sp_model_path, tokens) for part in texts]
    shards = sorted(tokens.glob("shard*.npy"))
    assert [p.name for p in shards] == ["shard000.npy", "shard001.npy"]
    for shard, text, count in zip(shards, texts.values(), counts, strict=True):
        ids = np.load(shard)
        assert len(ids) == count and ids[-1] == tokenizer.eos_id
        assert tokenizer.decode(ids[:-1].tolist()) == text
