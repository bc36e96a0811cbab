"""`megadoc eval ppl`, `eval copy`, `eval scrolls` and `eval compare` with the tiny model on small real-format files."""

import json
import math

import pytest

from megadoc.evals.who import names_answer
from tests.helpers import (
    AUSTEN,
    SHARED_DATA,
    VOYAGE,
    assert_one_line_error,
    json_rows,
    qasper_answer,
    run_cli,
    write_fairytaleqa,
)


def test_bits_per_byte_at_each_context_on_the_same_final_tokens(app_env, tiny_model_dir, tmp_path):
    book = tmp_path / "heldout.txt"
    book.write_text(AUSTEN[:3000], encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text(AUSTEN[:300], encoding="utf-8")
    result = run_cli("eval", "ppl", book, short, "--context", "256,32,100000", "--model", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["target_tokens"] == 32
    by_context = {r["context"]: r for r in row["results"]}
    assert list(by_context) == [32, 256, 100000]
    assert by_context[32]["texts"] == 2 and by_context[256]["texts"] == 1
    assert by_context[100000]["texts"] == 0 and by_context[100000]["bits_per_byte"] is None
    for context in (32, 256):
        value = by_context[context]["bits_per_byte"]
        assert math.isfinite(value) and 0 < value < 20  # a random model: about log2(500) bits per token
    table = run_cli("eval", "ppl", book, "--context", "32,64", "--model", tiny_model_dir)
    assert table.exit_code == 0 and "bits/byte" in table.stdout
    assert_one_line_error(run_cli("eval", "ppl", book, "--context", "a,b", "--model", tiny_model_dir), "--context")


def test_copy_scores_passages_read_once_then_again(app_env, tiny_model_dir, tmp_path):
    """The first reading's loss is the passage's own loss after BOS; the second is scored apart."""
    import torch

    from megadoc.evals.perplexity import target_loss
    from megadoc.pipeline.ingest import load_document
    from megadoc.pipeline.registry import load

    book = tmp_path / "book.txt"
    book.write_text(AUSTEN[:2000], encoding="utf-8")
    options = ("--passage-tokens", "7", "--passages", "3", "--model", tiny_model_dir, "--json")
    result = run_cli("eval", "copy", book, *options)
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["passages"] == 3 and row["passage_tokens"] == 7
    loaded = load(tiny_model_dir, torch.device("cpu"))
    ids = loaded.tokenizer.encode(load_document(book).text)  # what the model reads: wraps joined at ingestion
    room = len(ids) - 7
    passages = [ids[i * room // 3 : i * room // 3 + 7] for i in range(3)]
    first = sum(target_loss(loaded.model, loaded.tokenizer, p, 7, 7) / 7 for p in passages) / 3
    assert math.isclose(row["first"], first, rel_tol=1e-4)
    assert math.isfinite(row["second"]) and row["second"] != row["first"]
    table = run_cli("eval", "copy", book, "--passage-tokens", "7", "--model", tiny_model_dir)
    assert table.exit_code == 0 and "second reading" in table.stdout
    too_long = run_cli("eval", "copy", book, "--passage-tokens", "8", "--model", tiny_model_dir)
    assert_one_line_error(too_long, "does not fit")
    none = run_cli("eval", "copy", book, "--passages", "0", "--model", tiny_model_dir)
    assert_one_line_error(none, "at least one passage")


def _meeting(path):
    turns = [
        {"speaker": "Project Manager", "content": "OK , we 're on . Today we decide the remote control colour ."},
        {"speaker": "Industrial Designer", "content": "I think yellow , because fruit is in fashion ."},
        {"speaker": "Marketing", "content": "Our survey says young people want a spongy remote {vocalsound} ."},
    ]
    meeting = {
        "meeting_transcripts": turns,
        "general_query_list": [{"query": "Summarize the meeting .", "answer": "They chose a yellow spongy remote."}],
        "specific_query_list": [
            {
                "query": "What colour did the designer want ?",
                "answer": "Yellow, because fruit is fashionable.",
                "relevant_text_span": [["1", "1"]],
            },
        ],
    }
    path.write_text(json.dumps(meeting), encoding="utf-8")


def test_scrolls_qmsum_runs_scores_and_resumes(app_env, tiny_model_dir, tmp_path):
    data = tmp_path / "qmsum"
    data.mkdir()
    _meeting(data / "ES2004a.json")
    out = tmp_path / "rows.jsonl"
    args = [
        "eval",
        "scrolls",
        "--task",
        "qmsum",
        "--data",
        data,
        "--model",
        tiny_model_dir,
        "--max-tokens",
        "4",
        "--no-repeat-ngram",
        "1",
    ]
    result = run_cli(*args, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["task"] == "qmsum" and row["count"] == 2 and 0 <= row["score"] <= 100 and row["recall"] is True
    assert row["no_repeat_ngram"] == 1
    assert len(out.read_text().splitlines()) == 2
    again = run_cli(*args, "--out", out, "--no-recall", "--limit", "1")
    assert again.exit_code == 0 and "| qmsum" not in again.stdout and "Megalodon-7B" in again.stdout
    assert len(out.read_text().splitlines()) == 2  # resumed: nothing predicted again


def test_scrolls_app_layout_runs_and_names_its_mode(app_env, tiny_model_dir, tmp_path):
    data = tmp_path / "qmsum"
    data.mkdir()
    _meeting(data / "ES2004a.json")
    args = ["eval", "scrolls", "--task", "qmsum", "--data", data, "--model", tiny_model_dir, "--max-tokens", "4"]
    result = run_cli(*args, "--layout", "app", "--out", tmp_path / "rows.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["count"] == 2 and row["mode"] == "app-recall" and row["model"].endswith("(app-recall)")
    assert_one_line_error(run_cli(*args, "--layout", "questions-last"), "--layout must be one of scrolls, app")
    assert_one_line_error(run_cli(*args, "--layout", "app", "--engine", "lead"), "--engine lead has none")


def test_scrolls_bad_input_is_one_line(app_env, tiny_model_dir, tmp_path):
    base = ["eval", "scrolls", "--model", tiny_model_dir]
    assert_one_line_error(run_cli(*base, "--task", "qmsum", "--data", tmp_path), "no QMSum meeting files")
    assert_one_line_error(run_cli(*base, "--task", "quality", "--data", tmp_path), "--task must be one of")
    hf = run_cli(*base, "--task", "qmsum", "--data", tmp_path / "x.jsonl", "--engine", "hf")
    assert_one_line_error(hf, "cannot load qmsum examples")


def test_scrolls_lead_baseline_gives_the_first_sentences_and_a_real_score(app_env, tmp_path):
    data = tmp_path / "val"
    data.mkdir()
    _meeting(data / "ES2004a.json")
    out = tmp_path / "lead.jsonl"
    result = run_cli("eval", "scrolls", "--task", "qmsum", "--data", data, "--engine", "lead", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["engine"] == "lead" and row["count"] == 2 and row["score"] > 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["prediction"].startswith("Project Manager: OK , we 're on .")


def test_compare_two_runs_with_a_paired_interval(app_env, tmp_path):
    """Run B scores 0.2 F1 lower than A on every example but one: A - B is positive, its interval
    too; a run against itself differs by exactly 0; a broken file is a one-line error."""

    def write(path, f1s):
        rows = [{"id": f"q{i}", "prediction": "", "metrics": {"f1": f1}} for i, f1 in enumerate(f1s)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(a, [0.5 + 0.01 * i for i in range(40)])
    write(b, [0.3 + 0.01 * i for i in range(39)] + [0.9])
    [row] = json_rows(run_cli("eval", "compare", a, b, "--task", "qasper", "--json").stdout)
    assert row["count"] == 40
    assert math.isclose(row["difference"], row["score_a"] - row["score_b"])
    assert math.isclose(row["difference"], 100 * (0.2 * 39 + (0.89 - 0.9)) / 40)
    assert 0 < row["low"] < row["difference"] < row["high"] < 21
    [same] = json_rows(run_cli("eval", "compare", a, a, "--task", "qasper", "--json").stdout)
    assert same["difference"] == same["low"] == same["high"] == 0
    text = run_cli("eval", "compare", a, b, "--task", "qasper")
    assert text.exit_code == 0 and text.stdout.startswith("40 shared examples: A ")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    broken = run_cli("eval", "compare", a, tmp_path / "bad.jsonl", "--task", "qasper")
    assert_one_line_error(broken, "not a per-example")


def test_scrolls_majority_baseline_answers_the_most_frequent_training_answer(app_env, tmp_path):
    """Qasper in its official JSON: the floor predicts the train split's most frequent answer."""

    def paper(answers: list[dict], question_id: str) -> dict:
        qas = [{"question": "Is it open?", "question_id": question_id, "answers": answers}]
        return {"title": "T", "abstract": "A.", "full_text": [], "qas": qas}

    train = {f"p{i}": paper([qasper_answer(yes_no=i % 3 != 0)], f"t{i}") for i in range(6)}  # 4 Yes, 2 No
    dev = {"d1": paper([qasper_answer(yes_no=True)], "v1"), "d2": paper([qasper_answer(unanswerable=True)], "v2")}
    (tmp_path / "qasper-train-v0.3.json").write_text(json.dumps(train), encoding="utf-8")
    (tmp_path / "qasper-dev-v0.3.json").write_text(json.dumps(dev), encoding="utf-8")
    out = tmp_path / "majority.jsonl"
    args = ["eval", "scrolls", "--task", "qasper", "--data", tmp_path, "--engine", "majority"]
    result = run_cli(*args, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["engine"] == "majority" and row["count"] == 2 and row["model"] == "majority answer ('Yes')"
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == ["Yes", "Yes"]
    assert math.isclose(row["score"], 50.0)  # right on v1 (F1 1), wrong on v2 (F1 0)
    (tmp_path / "qasper-train-v0.3.json").write_text("{}", encoding="utf-8")
    assert_one_line_error(run_cli(*args, "--out", tmp_path / "again.jsonl"), "--engine majority needs training answers")


def test_who_questions_score_names_beside_the_evidence_floor(app_env, tiny_model_dir, tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "Our__Voyage.txt").write_text(VOYAGE, encoding="utf-8")
    questions = tmp_path / "who.json"
    questions.write_text(
        json.dumps(
            {
                "questions": [
                    {"book": "Our__Voyage", "question": "Who kept the great lamp burning?", "answers": ["Harville"]},
                    {"book": "Our__Voyage", "question": "Who is Harville's sister?", "answers": ["Fanny"]},
                ]
            }
        ),
        encoding="utf-8",
    )
    args = ("eval", "who", "--books", books, "--questions", questions, "--model", tiny_model_dir, "--max-tokens", "6")
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["count"] == 2 and row["recall"] is True and row["names"] is True
    first, second = row["results"]
    # Who-questions are answered with a name of the recalled passages that the question does not use.
    assert first["answer"] in {"Harville", "Benwick"} and second["answer"] == "Benwick"
    for r in row["results"]:
        assert r["correct"] == names_answer(r["answer"], tuple(r["answers"]))
        assert r["citations"] and all(label.startswith("line ") for label in r["citations"])
    # The floor: the book's most frequent character (Harville, Benwick; Fanny is named once) in the
    # recalled passages, never one the question names.
    assert first["floor_answer"] == "Harville" and first["floor_correct"]
    assert second["floor_answer"] in {"", "Benwick"} and not second["floor_correct"]
    assert row["floor_correct"] == 1
    # Both answers are in the recalled passages (Fanny beside "Harville's sister"): what reading finds.
    assert first["in_evidence"] and second["in_evidence"] and row["in_evidence"] == 2
    [free] = json_rows(run_cli(*args, "--no-names", "--json").stdout)
    assert free["names"] is False and free["floor_correct"] == 1
    table = run_cli(*args)
    assert table.exit_code == 0 and all(word in table.stdout for word in "Who kept the great lamp burning?".split())
    assert "a right name is in that text: 2" in " ".join(table.stdout.split())  # the caption wraps at 80

    missing = questions.with_name("missing.json")
    missing.write_text(json.dumps({"questions": [{"book": "Nobody__Nothing", "question": "Who?", "answers": ["X"]}]}))
    assert_one_line_error(run_cli(*args[:5], missing, *args[6:]), "Nobody__Nothing")
    questions.write_text("{not json", encoding="utf-8")
    assert_one_line_error(run_cli(*args), "not a who-questions file")


def test_who_answers_count_whole_names_only():
    assert names_answer("It was Victor Frankenstein.", ("Frankenstein",))
    assert names_answer("the cheshire cat", ("Cheshire",))
    assert not names_answer("Lacey curtains", ("La",))
    assert not names_answer("Victoria", ("Victor",))
    assert names_answer("Jad-bal-ja, the lion", ("Jad-bal-ja",))


def test_scrolls_writes_its_rows_under_the_results_folder_and_says_where(app_env, tmp_path, monkeypatch):
    data = tmp_path / "val"
    data.mkdir()
    _meeting(data / "ES2004a.json")
    monkeypatch.setenv("MEGADOC_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    result = run_cli("eval", "scrolls", "--task", "qmsum", "--data", data, "--engine", "lead", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    out = tmp_path / "results" / "scrolls-qmsum-lead-10-(first-10-sentences).jsonl"
    assert row["out"] == str(out) and len(out.read_text().splitlines()) == 2
    assert str(out) in " ".join(result.stderr.split()).replace(" ", "") or out.name in result.stderr.replace("\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "val"]  # nothing in the current folder
    assert row["peak_memory_bytes"]["rss"] > 10_000_000 and row["seconds_per_example"] >= 0


def test_scrolls_hf_engine_reads_the_head_or_the_recalled_passages(app_env, tiny_llama, tmp_path):
    data = tmp_path / "scientific_qa.jsonl"
    paper = "We study gulls. " * 200 + "The dataset is Twitter. " + "Gulls fly. " * 200
    row = {"instructions": ["Which dataset is used?", "Is it open?"], "outputs": ["Twitter", "yes"], "input": paper}
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    base = ["eval", "scrolls", "--task", "qasper", "--data", data, "--engine", "hf", "--model", tiny_llama]
    for mode in ("--no-recall", "--recall"):
        result = run_cli(*base, mode, "--max-tokens", "4", "--out", tmp_path / f"{mode}.jsonl", "--json")
        assert result.exit_code == 0, result.stderr
        [summary] = json_rows(result.stdout)
        assert summary["count"] == 2 and summary["mode"] == ("recall" if mode == "--recall" else "head")
        assert summary["window"] == 256 and 0 <= summary["score"] <= 100
    assert_one_line_error(
        run_cli(*base[:-2], "--model", tmp_path / "nothing"), "a Hugging Face model directory or a .gguf"
    )
    assert_one_line_error(run_cli(*base, "--context", "tail"), "--context must be one of head, scrolls")


def test_who_with_a_hugging_face_model_counts_what_it_was_shown(app_env, tiny_llama, tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    story = [f"On day {n} the sailor Harville walked to the harbour with Benwick." for n in range(12)]
    (books / "Our__Voyage.txt").write_text("\n\n".join(story), encoding="utf-8")
    questions = tmp_path / "who.json"
    asked = [{"book": "Our__Voyage", "question": "Who walked with Benwick?", "answers": ["Harville"]}]
    questions.write_text(json.dumps({"questions": asked}), encoding="utf-8")
    args = ("eval", "who", "--books", books, "--questions", questions, "--engine", "hf", "--model", tiny_llama)
    result = run_cli(*args, "--max-tokens", "4", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["engine"] == "hf" and row["mode"] == "head" and row["count"] == 1
    [answer] = row["results"]
    # The whole short book fits the window: Harville is in what it saw, and the floor names him; asked
    # for a person, the model chooses among the names it saw that the question does not use.
    assert answer["in_evidence"] and answer["floor_answer"] == "Harville" and row["floor_correct"] == 1
    assert row["names"] is True and answer["answer"] == "Harville" and answer["correct"]
    [written] = json_rows(run_cli(*args, "--max-tokens", "4", "--no-names", "--json").stdout)
    assert written["names"] is False
    assert written["results"][0]["correct"] == names_answer(written["results"][0]["answer"], ("Harville",))
    assert_one_line_error(run_cli(*args[:6], "--engine", "llama"), "--engine must be megadoc or hf")


@pytest.mark.parametrize(
    ("task", "parts", "engine", "split"),
    [
        ("narrativeqa", ("narrativeqa", "fullstory_valid.jsonl.gz"), "name", "validation"),
        ("squality", ("squality", "v1-3_txt_dev.jsonl.gz"), "lead", "validation"),
        ("fairytaleqa", ("fairytaleqa", "fairytaleqa_by_split.tar.gz"), "majority", "validation"),
        ("qmsum", ("qmsum", "val"), "lead", "validation"),
    ],
)
def test_real_data_floors_run_end_to_end(app_env, tmp_path, task, parts, engine, split):
    data = SHARED_DATA.joinpath(*parts)
    if not data.exists():
        pytest.skip(f"{data} not found (see shared/data/README.md)")
    args = ["eval", "scrolls", "--task", task, "--data", data, "--engine", engine, "--limit", "3", "--split", split]
    result = run_cli(*args, "--out", tmp_path / "rows.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["count"] == 3 and 0 <= row["score"] <= 100
    assert all(json.loads(line)["prediction"] for line in (tmp_path / "rows.jsonl").read_text().splitlines())


def test_eval_scrolls_attribute_keeps_fairytaleqa_character_questions(app_env, tmp_path):
    story = ("Tom met Anna by the well. Then Tom and Anna talked.", "Later Tom slept while Anna sang, and Tom dreamed.")
    questions = (("character", "Who slept?", "Tom", "Tom did"), ("action", "What did Anna do?", "sang", "she sang"))
    data = write_fairytaleqa(tmp_path, packed=True, sections=story, questions=questions)
    args = ["eval", "scrolls", "--task", "fairytaleqa", "--data", data, "--engine", "name"]
    result = run_cli(*args, "--attribute", "character", "--out", tmp_path / "rows.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["count"] == 1 and row["attribute"] == "character" and row["score"] == 100.0
    [answer] = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert answer["id"] == "val-tale/1" and answer["prediction"] == "Tom"
    weather = run_cli(*args, "--attribute", "weather")
    assert_one_line_error(weather, "no question has the attribute", "action, character")
    qmsum = ["eval", "scrolls", "--task", "qmsum", "--data", tmp_path, "--attribute", "character"]
    assert_one_line_error(run_cli(*qmsum), "--attribute chooses FairytaleQA")
