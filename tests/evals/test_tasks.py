"""Loaders of the long-document tasks beside QMSum: files the tests write, and the real data."""

import gzip
import json
import tarfile

import pytest

from megadoc.evals.datasets import load_examples
from megadoc.evals.fairytaleqa import load_fairytaleqa
from megadoc.evals.scrolls import load_narrativeqa_fullstory
from tests.helpers import SHARED_DATA, write_fairytaleqa


def write_fullstory(path, stories):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for number, (story, qas) in enumerate(stories):
            row = {"document_id": f"doc{number}", "set": "valid", "wiki_title": f"Book {number}", "story": story}
            row["qas"] = [{"question_tokenized": q, "answers": answers} for q, answers in qas]
            f.write(json.dumps(row) + "\n")
    return path


def test_narrativeqa_fullstory_reads_the_shared_format_as_it_is(tmp_path):
    path = write_fullstory(
        tmp_path / "fullstory_valid.jsonl.gz",
        [
            ("It was a dark night.\r\nMary rode out.", [("Who rode out ?", ["Mary .", "mary"])]),
            ("Tom sailed.", [("Who sailed ?", ["Tom", "Thomas"]), ("What did Tom do ?", ["sailed", "he sailed"])]),
        ],
    )
    examples = load_examples("narrativeqa", path)
    assert [e.id for e in examples] == ["doc0/0", "doc1/0", "doc1/1"]
    first = examples[0]
    assert first.task == "narrativeqa" and first.question == "Who rode out ?"
    assert first.references == ["Mary .", "mary"] and first.document == "It was a dark night.\nMary rode out."
    assert first.meta["title"] == "Book 0"
    with pytest.raises(ValueError, match="no stories"):
        load_narrativeqa_fullstory(write_fullstory(tmp_path / "empty.jsonl.gz", []))


def test_leval_scientific_qa_is_qasper_one_example_per_instruction(tmp_path):
    path = tmp_path / "scientific_qa.jsonl"
    rows = [
        {"instructions": ["Which data?", "Is it open?"], "outputs": ["Twitter", "Yes"], "input": "Paper one."},
        {"instructions": ["Which model?"], "outputs": ["an LSTM"], "input": "Paper two.", "source": "scientific_qa"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    examples = load_examples("qasper", path)
    assert [(e.id, e.question, e.references, e.document) for e in examples] == [
        ("0/0", "Which data?", ["Twitter"], "Paper one."),
        ("0/1", "Is it open?", ["Yes"], "Paper one."),
        ("1/0", "Which model?", ["an LSTM"], "Paper two."),
    ]
    assert {e.task for e in examples} == {"qasper"}
    path.write_text(json.dumps({"instructions": ["q"], "outputs": [], "input": "d"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 instructions but 0 outputs"):
        load_examples("qasper", path)


def test_squality_has_the_four_responses_as_references(tmp_path):
    path = tmp_path / "dev.jsonl.gz"
    responses = [{"response_text": f" answer {i} ", "uid": str(i), "worker_id": str(i)} for i in range(4)]
    story = {
        "metadata": {"passage_id": "63833", "uid": "u"},
        "document": "A story in space.",
        "questions": [
            {"question_text": "What is the plot of the story?", "question_number": "1", "responses": responses}
        ],
    }
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(story) + "\n")
    [example] = load_examples("squality", path)
    assert example.id == "63833/1" and example.task == "squality" and example.document == "A story in space."
    assert example.references == ["answer 0", "answer 1", "answer 2", "answer 3"]


@pytest.mark.parametrize("packed", [True, False])
def test_fairytaleqa_reads_the_tar_as_distributed_or_its_folder(tmp_path, packed):
    path = write_fairytaleqa(tmp_path, packed)
    [example] = load_examples("fairytaleqa", path, "validation")
    assert example.id == "val-tale/1" and example.question == "What ran?"
    assert example.document == "Once a val fox ran.\n\nThen it slept." and example.references == ["a fox", "the fox"]
    [train] = load_fairytaleqa(path, "train")
    assert train.document.startswith("Once a train fox")
    with pytest.raises(ValueError, match="unknown FairytaleQA split"):
        load_fairytaleqa(path, "dev2")
    with pytest.raises(ValueError, match="no FairytaleQA questions of the test split"):
        load_fairytaleqa(path, "test")


def _shared(*parts):
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (see shared/data/README.md)")
    return path


def test_real_narrativeqa_fullstory_valid():
    examples = load_examples("narrativeqa", _shared("narrativeqa", "fullstory_valid.jsonl.gz"))
    assert len(examples) == 589 and len({e.meta["document_id"] for e in examples}) == 20
    assert all(len(e.references) == 2 for e in examples) and "\r" not in examples[0].document


def test_real_leval_scientific_qa(tmp_path):
    with tarfile.open(_shared("leval", "leval_data_subset.tar.gz")) as archive:
        member = archive.getmember("LEval-data/Open-ended-tasks/scientific_qa.jsonl")
        (tmp_path / "scientific_qa.jsonl").write_bytes(archive.extractfile(member).read())
    examples = load_examples("qasper", tmp_path / "scientific_qa.jsonl")
    assert len(examples) == 184 and len({e.meta["document"] for e in examples}) == 23


def test_real_squality_dev():
    examples = load_examples("squality", _shared("squality", "v1-3_txt_dev.jsonl.gz"))
    assert len(examples) == 125 and all(len(e.references) == 4 for e in examples)


def test_real_fairytaleqa_validation():
    examples = load_examples("fairytaleqa", _shared("fairytaleqa", "fairytaleqa_by_split.tar.gz"), "validation")
    assert len(examples) == 1025 and len({e.meta["story"] for e in examples}) == 23
    assert all(e.references for e in examples)
