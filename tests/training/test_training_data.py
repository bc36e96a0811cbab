"""Round 10's training data: what never trains (evaluation books and splits), the reading sets'
loaders, rows trimmed to whole chunks, recall rows that hold their answer, shards that arrive
while a run trains, and a tiny model that learns to copy a name from its evidence."""

import csv
import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from megadoc.engine import Megalodon, Tokenizer
from megadoc.training.batches import PretrainWindows, TuneRows
from megadoc.training.corpus import training_books
from megadoc.training.exclusions import EVALUATION_BOOKS, check_training_split, is_evaluation_book
from megadoc.training.loop import train
from megadoc.training.reading import (
    fairytaleqa_story_names,
    load_boolq,
    load_fairytaleqa,
    load_mctest,
    load_squality,
)
from megadoc.training.rows import (
    CHUNK_SIZE,
    _book_rows,
    kept_raw,
    make_row,
    pretraining_text,
    select_books,
    write_rows,
)
from tests.helpers import SHARED_DATA, tiny_recipe

EVALS = Path(__file__).resolve().parents[2] / "src" / "megadoc" / "evals"
needs_shared = pytest.mark.skipif(not (SHARED_DATA / "books").is_dir(), reason=f"no shared data at {SHARED_DATA}")


def test_every_book_an_evaluation_asks_about_is_excluded():
    asked = {q["book"] for path in EVALS.glob("who_questions*.json") for q in json.loads(path.read_text())["questions"]}
    assert asked and asked <= EVALUATION_BOOKS


def test_training_books_leave_out_evaluation_books_whatever_the_split(tmp_path):
    names = [*sorted(EVALUATION_BOOKS), *(f"Author-{i}__Title-{i}" for i in range(40))]
    for name in names:
        (tmp_path / f"{name}.txt.gz").write_bytes(gzip.compress(b"text"))
    kept = training_books(tmp_path)
    assert kept and not any(is_evaluation_book(path) for path in kept)
    assert len(kept) >= 30  # the other books stay (less the hash's 5% held out)


@needs_shared
def test_no_shared_training_book_is_an_evaluation_book():
    kept = training_books(SHARED_DATA / "books")
    assert len(kept) > 1200
    assert not {path.name.removesuffix(".txt.gz") for path in kept} & EVALUATION_BOOKS


@pytest.mark.parametrize("split", ["val", "dev", "test", "validation", "Test"])
def test_evaluation_splits_are_refused(split):
    with pytest.raises(ValueError, match="evaluation data"):
        check_training_split(split, "fairytaleqa")
    check_training_split("train", "fairytaleqa")
    with pytest.raises(ValueError):
        check_training_split("train", "narrativeqa")


def _tar(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_fairytaleqa_reads_its_train_split_only(tmp_path):
    root = "FairytaleQA/data-by-train-split"
    question = {"question": "Who found the ring?", "answer1": "the miller", "attribute1": "character"}
    archive = _tar(
        tmp_path / "f.tar.gz",
        {
            f"{root}/section-stories/train/mill-story.csv": _csv([{"section": 1, "text": "The miller found a ring."}]),
            f"{root}/questions/train/mill-questions.csv": _csv([question]),
            f"{root}/section-stories/test/wolf-story.csv": _csv([{"section": 1, "text": "A wolf."}]),
            f"{root}/questions/test/wolf-questions.csv": _csv([question | {"answer1": "the wolf"}]),
        },
    )
    [example] = load_fairytaleqa(archive)
    assert (example.document, example.answer, example.tag) == ("The miller found a ring.", "the miller", "character")
    assert fairytaleqa_story_names(archive, "test") == {"wolf"}
    with pytest.raises(ValueError):
        load_fairytaleqa(archive, "test")


def test_mctest_answers_with_the_text_of_the_right_option(tmp_path):
    story = "Tom met Jim.\\newlineJim had a red hat."
    questions = "\t".join(["one: Who had a red hat?", "Tom", "Jim", "Ann", "Bob"] * 4)
    archive = _tar(
        tmp_path / "m.tar.gz",
        {
            "MCTest/mc160.train.tsv": f"mc160.train.0\tAuthor\t{story}\t{questions}\n",
            "MCTest/mc160.train.ans": "B\tB\tA\tD\n",
            "MCTest/mc500.train.tsv": "",
            "MCTest/mc500.train.ans": "",
        },
    )
    examples = load_mctest(archive)
    assert [e.answer for e in examples] == ["Jim", "Jim", "Tom", "Bob"]
    assert examples[0].question == "Who had a red hat?" and "\n" in examples[0].document


def test_boolq_and_squality_refuse_their_evaluation_files(tmp_path):
    row = {"question": "is the sky blue", "passage": "Sky -- The sky is blue.", "idx": 0, "label": "True"}
    train_file = tmp_path / "boolq_train_superglue.jsonl.gz"
    train_file.write_bytes(gzip.compress(json.dumps(row).encode()))
    [example] = load_boolq(train_file)
    assert (example.question, example.answer) == ("Is the sky blue?", "yes")
    val_file = tmp_path / "boolq_val_superglue.jsonl.gz"
    val_file.write_bytes(train_file.read_bytes())
    with pytest.raises(ValueError):
        load_boolq(val_file)
    story = {"document": "A story.", "questions": [{"question_text": "What happens?", "responses": [
        {"response_text": "Much."}, {"response_text": "Little."}]}]}  # fmt: skip
    squality = tmp_path / "v1-3_txt_train.jsonl.gz"
    squality.write_bytes(gzip.compress(json.dumps(story).encode()))
    assert sorted(e.answer for e in load_squality(squality)) == ["Little.", "Much."]
    (tmp_path / "v1-3_txt_dev.jsonl.gz").write_bytes(squality.read_bytes())
    with pytest.raises(ValueError):
        load_squality(tmp_path / "v1-3_txt_dev.jsonl.gz")


@needs_shared
def test_shared_fairytaleqa_train_holds_no_evaluation_story():
    archive = SHARED_DATA / "fairytaleqa" / "fairytaleqa_by_split.tar.gz"
    train_stories = {e.document for e in load_fairytaleqa(archive)}
    held = fairytaleqa_story_names(archive, "val") | fairytaleqa_story_names(archive, "test")
    assert held and not held & fairytaleqa_story_names(archive, "train")
    assert len(train_stories) == len(fairytaleqa_story_names(archive, "train"))


def test_rows_keep_whole_chunks_of_context():
    context = list(range(3 * CHUNK_SIZE))
    ids, start = make_row(context, [7, 8], [9, 2], keep_chunks=1)
    assert ids == [*range(2 * CHUNK_SIZE, 3 * CHUNK_SIZE), 7, 8, 9, 2]
    assert start == CHUNK_SIZE + 2 and ids[start:] == [9, 2]
    assert make_row(context, [7], [9])[1] == 3 * CHUNK_SIZE + 1


def test_books_are_selected_by_list_and_part(tmp_path):
    books = [tmp_path / f"b{i}.txt.gz" for i in range(6)]
    listing = tmp_path / "added.tsv"
    listing.write_text("file\tid\nb1.txt.gz\t1\nb2.txt.gz\t2\nb4.txt.gz\t4\n")
    assert select_books(books, listing) == [books[1], books[2], books[4]]
    assert select_books(books, listing, (2, 2)) == [books[2]]
    assert select_books(books, None, (1, 3)) == [books[0], books[3]]


def test_some_books_pretrain_with_their_line_wraps(tmp_path):
    paths = [Path(f"Author__Book-{i}.txt.gz") for i in range(400)]
    raw = sum(kept_raw(path) for path in paths)
    assert 20 <= raw <= 60  # about a tenth
    wrapped = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n" + "one two three\nfour five six.\n\nSeven.\n" * 30
    for path in (next(p for p in paths if kept_raw(p)), next(p for p in paths if not kept_raw(p))):
        (tmp_path / path).write_bytes(gzip.compress(wrapped.encode()))
        text = pretraining_text(tmp_path / path)
        assert "START OF" not in text
        assert ("three\nfour" in text) == kept_raw(path)


def test_recall_rows_hold_their_answer_in_the_recalled_passages(tmp_path, sp_model_path):
    people = ["Harriet", "Edmund", "Lucy", "Walter"]
    lines = []
    for i in range(300):
        a, b = people[i % 4], people[(i + 1) % 4]
        lines.append(
            f'"I shall go to the village tomorrow morning," said {a}. {b} walked down the long road to the mill.'
        )
    book = tmp_path / "Author__Book.txt"
    book.write_text("\n\n".join(lines))
    tokenizer = Tokenizer.load(sp_model_path)
    pool = ("Agnes", "Bertram", "Cecil", "Dora", "Eliza", "Felix")
    whole, kept, bare = (_book_rows((str(book), str(sp_model_path), 12, 0, pool, keep)) for keep in (None, 1, 0))
    assert kept and len(whole) == len(kept) == len(bare)
    for (whole_ids, whole_start), (ids, start), (_, prompt_start) in zip(whole, kept, bare, strict=True):
        answer = tokenizer.decode(ids[start:]).strip()
        assert answer in pool
        assert ids[start:] == tokenizer.encode(" " + answer) + [tokenizer.eos_id]
        dropped = len(whole_ids) - len(ids)
        assert dropped % CHUNK_SIZE == 0 and whole_ids[dropped:] == ids and whole_start - dropped == start
        assert start - prompt_start <= CHUNK_SIZE  # one chunk of the window is kept before the prompt


def test_shards_that_land_during_a_run_join_the_draw(tmp_path):
    np.save(tmp_path / "shard000.npy", np.zeros(1000, dtype=np.uint16))
    windows = PretrainWindows(tmp_path, 16, np.random.default_rng(0))
    np.save(tmp_path / "shard001.npy", np.ones(1000, dtype=np.uint16))
    seen = {int(windows.sample()[0][0]) for _ in range(4 * PretrainWindows.REFRESH_EVERY)}
    assert seen == {0, 1}
    for path in tmp_path.glob("*.npy"):  # a folder emptied under a run: it keeps drawing what it had
        path.unlink()
    windows.refresh()
    assert int(windows.sample()[0][0]) in {0, 1}


def test_tune_rows_come_from_several_files(tmp_path):
    write_rows([([1, 2, 3, 4], 3)], tmp_path / "a.npz")
    write_rows([([5, 6, 7], 1), ([8, 9, 10, 11, 12], 4)], tmp_path / "b.npz")
    rows = TuneRows([tmp_path / "a.npz", tmp_path / "b.npz"], 8, 0, np.random.default_rng(0), 4)
    assert rows.offsets.tolist() == [0, 4, 7, 12] and rows.answer_starts.tolist() == [3, 5, 11]
    answers = set()
    for _ in range(50):
        inputs, targets = rows.sample()
        answers.add(tuple(int(t) for t in targets if t >= 0))
    assert answers == {(4,), (6, 7), (12,)}


# The copy task: a row holds one name among filler words, then "ASK"; the answer is that name.
# Names are drawn anew for every row, so nothing but the row itself says which: the model must
# copy it from its evidence, the skill answering from recalled passages rests on.
NAMES, FILLER, ASK = range(40, 64), range(4, 40), 3


def _copy_rows(rng: np.random.Generator, count: int) -> list[tuple[list[int], int]]:
    rows = []
    for _ in range(count):
        ids = [1, *(int(t) for t in rng.choice(FILLER, 8))]
        name = int(rng.choice(NAMES))
        ids[int(rng.integers(1, 9))] = name
        rows.append(([*ids, ASK, name], len(ids) + 1))
    return rows


@pytest.mark.slow  # 120 training steps: about a minute of CPU time (8.5 min wall on a loaded 2-core host)
def test_a_tiny_model_learns_to_copy_a_name_from_its_evidence(tmp_path):
    rng = np.random.default_rng(0)
    write_rows(_copy_rows(rng, 2000), tmp_path / "copy.npz")
    np.save(tmp_path / "shard000.npy", rng.integers(4, 64, 4000).astype(np.uint16))
    recipe = tiny_recipe(
        tmp_path,
        tmp_path,
        tune=str(tmp_path / "copy.npz"),
        tune_fraction=1.0,
        model={"preset": "tiny", "vocab_size": 64, "chunk_size": 16},
        seq_len=16,
        batch_size=32,
        steps=120,
        warmup_steps=10,
        log_every=40,
        save_every=1000,
    )
    checkpoint = train(recipe)
    model = Megalodon.from_pretrained(checkpoint, dtype=torch.float32).eval()
    test = _copy_rows(np.random.default_rng(1), 200)
    with torch.no_grad():
        logits = model(torch.tensor([ids[:start] for ids, start in test]))[:, -1]
    right = (logits.argmax(-1) == torch.tensor([ids[start] for ids, start in test])).float().mean().item()
    assert right > 0.8  # chance: 1 in 24
