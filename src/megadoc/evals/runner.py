"""Run a predictor over SCROLLS examples, one JSONL row per example, resumably."""

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import platformdirs

from megadoc.evals.metrics import example_metrics, example_score, task_metrics
from megadoc.evals.scrolls import Example, scrolls_input


def results_dir() -> Path:
    """Where eval results go unless the user names a file: MEGADOC_RESULTS_DIR, else the user's
    data directory (as the model registry keeps user models), never the current folder."""
    return Path(os.environ.get("MEGADOC_RESULTS_DIR") or Path(platformdirs.user_data_dir("megadoc")) / "evals")


def peak_memory_bytes() -> dict[str, int]:
    """This process's peak resident memory so far, and torch's peak CUDA allocation where CUDA ran."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda"] = torch.cuda.max_memory_allocated()
    return peak


class Predictor(Protocol):
    """Anything that answers an example: Megalodon, a Hugging Face model, a baseline."""

    def predict(self, example: Example) -> str: ...


@dataclass(frozen=True)
class Summary:
    """A task's aggregate over the examples in the results file."""

    task: str
    count: int
    score: float  # the SCROLLS number for the task, 0-100
    metrics: dict[str, float]
    seconds: float  # predicting time summed over the examples


def run_eval(
    task: str,
    examples: Sequence[Example],
    predictor: Predictor,
    out_jsonl: Path,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Predict ``examples[:limit]``, appending one row per example to ``out_jsonl``.

    Rows hold id, input_chars (length of the SCROLLS input), prediction, references,
    metrics (in [0, 1]), score (0-100) and seconds. Ids already in the file are
    skipped, so an interrupted run goes on where it stopped; the summary covers
    every example of ``examples[:limit]`` that has a row. ``on_progress(done, total)``
    is called after each example, resumed ones included.
    """
    wrong = {example.task for example in examples} - {task}
    if wrong:
        raise ValueError(f"run_eval({task!r}) was given examples of {sorted(wrong)}")
    chosen = list(examples[:limit])
    out_jsonl = Path(out_jsonl)
    out_jsonl.parent.mkdir(parents=True, exist_ok=True)
    rows = _read_rows(out_jsonl)
    with open(out_jsonl, "a", encoding="utf-8") as out:
        for done, example in enumerate(chosen, start=1):
            if example.id not in rows:
                rows[example.id] = _predict_row(task, example, predictor)
                out.write(json.dumps(rows[example.id], ensure_ascii=False) + "\n")
                out.flush()
            if on_progress is not None:
                on_progress(done, len(chosen))
    finished = [rows[example.id] for example in chosen]
    metrics = task_metrics(task, [row["metrics"] for row in finished]) if finished else {"score": 0.0}
    return Summary(task, len(finished), metrics["score"], metrics, sum(row["seconds"] for row in finished))


def _predict_row(task: str, example: Example, predictor: Predictor) -> dict:
    start = time.perf_counter()
    prediction = predictor.predict(example)
    seconds = time.perf_counter() - start
    metrics = example_metrics(task, prediction, example.references)
    return {
        "id": example.id,
        "input_chars": len(scrolls_input(example)),
        "prediction": prediction,
        "references": example.references,
        "metrics": metrics,
        "score": example_score(task, metrics),
        "seconds": seconds,
    }


def _read_rows(path: Path) -> dict[str, dict]:
    """Rows already written; a last line cut short by a kill is dropped from the file."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    complete, _, partial = text.rpartition("\n")
    if partial:
        path.write_text(complete + "\n" if complete else "", encoding="utf-8")
    rows = (json.loads(line) for line in complete.splitlines() if line.strip())
    return {row["id"]: row for row in rows}
