import csv
import json
from pathlib import Path

import pytest

from megadoc.evals.report import LEVAL_RESULTS, PAPER_RESULTS, results_table
from megadoc.evals.runner import run_eval
from megadoc.evals.scrolls import (
    Example,
    load_narrativeqa,
    load_qasper,
    load_qmsum,
    load_scrolls_jsonl,
    scrolls_input,
)
from tests.helpers import SHARED_DATA, qasper_answer

QMSUM_VAL = SHARED_DATA / "qmsum" / "val"
needs_qmsum = pytest.mark.skipif(
    not QMSUM_VAL.is_dir(), reason=f"QMSum validation data not found at {QMSUM_VAL} (see shared/data/README.md)"
)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_narrativeqa_official_layout(tmp_path):
    # documents.csv and qaps.csv with the official columns; stories in tmp/ (download_stories.sh)
    # or stories/.
    write_csv(
        tmp_path / "documents.csv",
        [
            {
                "document_id": "d1",
                "set": "valid",
                "kind": "gutenberg",
                "story_url": "u",
                "story_file_size": "9",
                "wiki_url": "w",
                "wiki_title": "Book One",
                "story_word_count": "3",
                "story_start": "A",
                "story_end": "B",
            },
            {
                "document_id": "d2",
                "set": "train",
                "kind": "movie",
                "story_url": "u",
                "story_file_size": "9",
                "wiki_url": "w",
                "wiki_title": "Film",
                "story_word_count": "3",
                "story_start": "A",
                "story_end": "B",
            },
        ],
    )
    qaps = [
        ("d1", "valid", "Who is {Bob}?", "A sailor.", 'The sailor, "Bob"'),
        ("d2", "train", "Where?", "Paris", "in Paris"),
        ("d1", "valid", "Why, then?", "Because", "Money"),
    ]
    write_csv(
        tmp_path / "qaps.csv",
        [
            {
                "document_id": d,
                "set": s,
                "question": q,
                "answer1": a1,
                "answer2": a2,
                "question_tokenized": q.lower(),
                "answer1_tokenized": a1.lower(),
                "answer2_tokenized": a2.lower(),
            }
            for d, s, q, a1, a2 in qaps
        ],
    )
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "d1.content").write_bytes("Call me Bob, {the} sailor.\nCaf\xe9".encode("latin-1"))
    (tmp_path / "stories").mkdir()
    (tmp_path / "stories" / "d2.content").write_text("A film in Paris.", encoding="utf-8")

    valid = load_narrativeqa(tmp_path, "validation")
    assert [e.id for e in valid] == ["d1/0", "d1/1"]
    first = valid[0]
    assert first.task == "narrativeqa"
    assert first.question == "Who is {Bob}?"
    assert first.references == ["A sailor.", 'The sailor, "Bob"']
    assert first.document.startswith("Call me Bob, {the} sailor.\nCaf")  # bad UTF-8 is replaced, not fatal
    assert first.meta == {"document_id": "d1", "kind": "gutenberg", "title": "Book One"}
    assert scrolls_input(first) == "Who is {Bob}?\n\n" + first.document

    [train] = load_narrativeqa(tmp_path, "train")
    assert train.document == "A film in Paris."

    (tmp_path / "stories" / "d2.content").unlink()
    with pytest.raises(FileNotFoundError, match="download_stories.sh"):
        load_narrativeqa(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown NarrativeQA split"):
        load_narrativeqa(tmp_path, "dev")


def test_qasper_official_json(tmp_path):
    papers = {
        "1909.00001": {
            "title": "Seeds",
            "abstract": "We learn from seeds.",
            "full_text": [
                {"section_name": "Introduction", "paragraphs": ["First {para}.", "Second."]},
                {"section_name": "Method", "paragraphs": ["We use BERT."]},
            ],
            "qas": [
                {
                    "question": "What model?",
                    "question_id": "q1",
                    "answers": [
                        qasper_answer(extractive_spans=["BERT", "a lexicon"]),
                        qasper_answer(free_form_answer="A BERT encoder"),
                    ],
                },
                {
                    "question": "Is it open?",
                    "question_id": "q2",
                    "answers": [
                        qasper_answer(yes_no=True),
                        qasper_answer(yes_no=False),
                        qasper_answer(unanswerable=True),
                    ],
                },
            ],
        }
    }
    (tmp_path / "qasper-dev-v0.3.json").write_text(json.dumps(papers), encoding="utf-8")
    (tmp_path / "qasper-train-v0.3.json").write_text("{}", encoding="utf-8")

    examples = load_qasper(tmp_path, "validation")
    assert [e.id for e in examples] == ["q1", "q2"]
    q1, q2 = examples
    # Answers as text, as Qasper's official evaluator and SCROLLS make them.
    assert q1.references == ["BERT, a lexicon", "A BERT encoder"]
    assert q2.references == ["Yes", "No", "Unanswerable"]
    assert q1.document == (
        "Seeds\n\nWe learn from seeds.\n\nIntroduction\nFirst {para}.\nSecond.\n\nMethod\nWe use BERT."
    )
    assert q1.meta == {"paper_id": "1909.00001", "title": "Seeds"}
    assert load_qasper(tmp_path / "qasper-dev-v0.3.json") == examples
    assert load_qasper(tmp_path, "train") == []


def test_scrolls_jsonl_groups_outputs_and_splits_the_input(tmp_path):
    folder = tmp_path / "narrative_qa"
    folder.mkdir()
    rows = [
        {"id": "x1", "pid": "x1_0", "input": "Who?\n\nOnce upon a time.\n\nThe end.", "output": "A king"},
        {"id": "x2", "pid": "x2_0", "input": "Where?\n\nIn a castle.", "output": "castle"},
        {"id": "x1", "pid": "x1_1", "input": "Who?\n\nOnce upon a time.\n\nThe end.", "output": "The king"},
    ]
    path = folder / "validation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    x1, x2 = load_scrolls_jsonl(path)
    assert x1.task == "narrativeqa"
    assert (x1.id, x1.question, x1.document) == ("x1", "Who?", "Once upon a time.\n\nThe end.")
    assert x1.references == ["A king", "The king"]
    assert scrolls_input(x1) == rows[0]["input"]
    assert x2.references == ["castle"]

    test_split = tmp_path / "qmsum" / "test.jsonl"
    test_split.parent.mkdir()
    test_split.write_text(json.dumps({"id": "t", "pid": "t", "input": "Q\n\nD", "output": None}) + "\n")
    [unlabelled] = load_scrolls_jsonl(test_split)
    assert (unlabelled.task, unlabelled.references) == ("qmsum", [])

    with pytest.raises(ValueError, match="cannot tell the task"):
        load_scrolls_jsonl(Path("validation.jsonl"))


@needs_qmsum
def test_qmsum_val():
    examples = load_qmsum(QMSUM_VAL)
    meetings = {e.meta["meeting"] for e in examples}
    assert len(meetings) == 35
    assert len({e.id for e in examples}) == len(examples) == 272
    first = examples[0]
    assert first.id == "Bed002/general/0"
    assert first.question == "Summarize the whole meeting"
    assert first.document.startswith("Grad E: I guess .\nGrad A: OK , we 're on .")
    assert len(first.references) == 1 and first.references[0].startswith("The meeting was about")
    specific = next(e for e in examples if e.meta["kind"] == "specific")
    assert "relevant_text_span" in specific.meta


class CountingPredictor:
    def __init__(self, answer: str = "the meeting discussed the budget and the design") -> None:
        self.answer, self.calls = answer, 0

    def predict(self, example: Example) -> str:
        self.calls += 1
        return self.answer


def make_examples(count: int) -> list[Example]:
    return [
        Example(f"e{i}", "qmsum", f"Speaker: words {i}", f"query {i}", [f"they discussed the budget {i}"])
        for i in range(count)
    ]


def test_run_eval_resumes_without_duplicates_and_gives_the_same_score(tmp_path):
    examples = make_examples(6)
    fresh = run_eval("qmsum", examples, CountingPredictor(), tmp_path / "fresh.jsonl")

    out = tmp_path / "runs" / "resumed.jsonl"
    progress: list[tuple[int, int]] = []
    first = CountingPredictor()
    half = run_eval("qmsum", examples, first, out, limit=3, on_progress=lambda d, t: progress.append((d, t)))
    assert (first.calls, half.count) == (3, 3)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    # A kill in the middle of a write leaves a partial last line: it is dropped and redone.
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "e3", "predic')

    second = CountingPredictor()
    resumed = run_eval("qmsum", examples, second, out)
    assert second.calls == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [f"e{i}" for i in range(6)]
    assert resumed.count == fresh.count == 6
    assert resumed.score == pytest.approx(fresh.score)
    assert resumed.metrics == pytest.approx(fresh.metrics)
    assert set(rows[0]) == {"id", "input_chars", "prediction", "references", "metrics", "score", "seconds"}
    assert rows[0]["input_chars"] == len("query 0\n\nSpeaker: words 0")


def test_run_eval_refuses_examples_of_another_task(tmp_path):
    with pytest.raises(ValueError, match="examples of"):
        run_eval("qasper", make_examples(1), CountingPredictor(), tmp_path / "x.jsonl")


def test_results_table_puts_our_rows_beside_the_published_ones():
    table = results_table("qasper", {"megadoc-mini": 1.26})
    lines = table.splitlines()
    assert lines[0] == "| model | source | Qasper (F1) |"
    assert lines[2] == "| megadoc-mini | ours | 1.3 |"
    assert "| Megalodon-7B | paper (SCROLLS) | 28.0 |" in lines
    assert "| turbo-16k-0613 (L-Eval) | L-Eval | 28.2 |" in lines  # the same 184 scientific_qa questions
    assert len(lines) == 3 + len(PAPER_RESULTS) + len(LEVAL_RESULTS)
    fairytale = results_table("fairytaleqa", {"mini": 20.0}).splitlines()
    assert fairytale[0] == "| model | source | FairytaleQA (ROUGE-L F1) |" and len(fairytale) == 3
