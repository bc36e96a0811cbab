"""Progress of a long read: tokens/s and time left, on a terminal (rich's bar) and elsewhere (a
plain line now and then, so a read in a log or pipe is never silent)."""

import io

import torch
from rich.console import Console

from megadoc.pipeline import registry
from megadoc.pipeline.ingest import load_document
from megadoc.pipeline.progress import ProgressBar, Speedometer, rate
from megadoc.pipeline.session import Reader
from tests.helpers import AUSTEN


def test_speed_and_time_left_count_from_the_first_report():
    speed = Speedometer()
    speed.update(1000, now=10.0)  # a resumed read: 1,000 tokens were read before
    assert speed.left(1000, 5000) is None
    speed.update(1400, now=12.0)
    assert speed.speed == 200 and speed.left(1400, 5000) == 18


def test_a_read_logged_to_a_file_reports_speed_and_time_left(tiny_model_dir, tmp_path):
    loaded = registry.load(tiny_model_dir, torch.device("cpu"))
    path = tmp_path / "persuasion.txt"
    path.write_text(AUSTEN[:1500])
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=200)
    with ProgressBar(console, "persuasion.txt", line_seconds=0) as bar:
        read = Reader(loaded, None).read(load_document(path), bar.update)
    lines = log.getvalue().splitlines()
    assert lines and all(line.startswith("persuasion.txt: ") for line in lines)
    last = lines[-1]
    assert f"/{len(read.ids):,} tokens, " in last and " tokens/s, " in last and last.endswith(" left")


def test_an_eval_shows_its_reads_speed_beside_the_examples(tiny_model_dir, tmp_path):
    """Each example of an eval is a read of its document: the examples' line says how fast they read."""
    from megadoc.evals.predictor import MegalodonPredictor
    from megadoc.evals.runner import run_eval
    from megadoc.evals.scrolls import Example

    reader = Reader(registry.load(tiny_model_dir, torch.device("cpu")), None)
    examples = [Example(str(i), "qmsum", AUSTEN[i * 700 : i * 700 + 1400], "What happened?", ["x"]) for i in range(3)]
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=200)
    bar = ProgressBar(console, "examples", unit="examples", line_seconds=0)
    predictor = MegalodonPredictor(reader, recall=False, max_new_tokens=2, on_read=bar.read)
    with bar:
        run_eval("qmsum", examples, predictor, tmp_path / "rows.jsonl", on_progress=bar.update)
    lines = log.getvalue().splitlines()
    assert lines and all(line.startswith("examples: ") for line in lines)
    assert " examples/s, " in lines[-1] and lines[-1].endswith(" tokens/s read")
    assert int(lines[-1].split(", ")[-1].split()[0].replace(",", "")) > 0


def test_a_slow_rate_keeps_two_significant_digits():
    assert [rate(s) for s in (2410.4, 12.3, 3.44, 0.0463)] == ["2,410", "12", "3.4", "0.046"]
