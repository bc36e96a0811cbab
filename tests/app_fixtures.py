"""Shared fixtures and helpers for the application tests: a tiny random-weight model saved in our
checkpoint format with the suite's real sentencepiece model, a private cache per test, the CLI run
in-process, and real input files (PDFs written with fpdf2, WebVTT and SRT captions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from fpdf import FPDF
from typer.testing import CliRunner

from megadoc.cli import app
from megadoc.engine.config import MegalodonConfig
from megadoc.engine.model import Megalodon
from megadoc.engine.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"
AUSTEN = (DATA / "austen_persuasion_excerpt.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, sp_model_path: Path) -> Path:
    """The `tiny` preset with random weights (seeded), saved with the suite's tokenizer: `--model DIR`."""
    tokenizer = Tokenizer.load(sp_model_path)
    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size))
    directory = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(directory, sp_model_path)
    return directory


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state cache and an empty user models folder; returns the cache directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEGADOC_CACHE_DIR", str(cache))
    monkeypatch.setenv("MEGADOC_MODELS_DIR", str(tmp_path / "user-models"))
    return cache


def run_cli(*args: str | Path, stdin: str | bytes | None = None):
    """`megadoc ARGS` in-process; the result has exit_code, stdout and stderr apart."""
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def assert_one_line_error(result, *phrases: str) -> None:
    """Exit status 1, a single `error: ...` line on stderr holding every phrase, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    assert result.stdout == ""


def json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def austen_paragraphs(count: int, start: int = 0) -> list[str]:
    """Real prose: `count` paragraphs of the Persuasion excerpt (each on one line)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", AUSTEN) if len(p.split()) > 20]
    return paragraphs[start : start + count]


def write_pdf(path: Path, pages: list[str | None], **encryption: object) -> Path:
    """One page per item (None: a blank page, as a scan without a text layer reads)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        if text is not None:
            pdf.multi_cell(0, 5, text.encode("latin-1", "replace").decode("latin-1"))
    if encryption:
        pdf.set_encryption(**encryption)
    pdf.output(str(path))
    return path


def _clock(seconds: float, comma: bool) -> str:
    whole = int(seconds)
    millis = f"{int(round((seconds - whole) * 1000)):03d}"
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}{',' if comma else '.'}{millis}"


def write_vtt(path: Path, cues: list[tuple[str, str]], seconds_each: float = 7.5) -> Path:
    """WebVTT with one cue per (speaker, text), voice-tagged as meeting captions are."""
    lines = ["WEBVTT", ""]
    for i, (speaker, text) in enumerate(cues):
        lines += [
            f"{_clock(i * seconds_each, False)} --> {_clock((i + 1) * seconds_each, False)}",
            f"<v {speaker}>{text}",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_srt(path: Path, texts: list[str], seconds_each: float = 5.0) -> Path:
    lines = []
    for i, text in enumerate(texts, start=1):
        lines += [str(i), f"{_clock((i - 1) * seconds_each, True)} --> {_clock(i * seconds_each, True)}", text, ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
