"""What the tests share besides fixtures (those are in conftest.py): where ../shared is
($MEGADOC_SHARED), the GPU-only and oracle marks, the relative error of METHOD.md, kernel inputs,
the CLI run in-process, and real input files (PDFs written with fpdf2, WebVTT and SRT captions).
The CLI and fpdf2 are imported when used, so the kernel and engine tests need none of the app's
packages (the GPU machine has few of them)."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import torch

from megadoc.kernels.timestep_norm import NormStats

DATA = Path(__file__).parent / "data"
AUSTEN = (DATA / "austen_persuasion_excerpt.txt").read_text(encoding="utf-8")
SHARED = Path(os.environ.get("MEGADOC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ORACLE = SHARED / "oracle"
SHARED_DATA = SHARED / "data"
# The story the baseline tests ask about, and the window of the tiny Llama (conftest) trained on it.
SAILOR_STORY = (
    "The old sailor lived by the sea. Every morning he mended his nets and talked to the gulls. "
    "One day a stranger came to the harbour with a letter. The letter was from the sailor's brother. "
)
LLAMA_WINDOW = 256
# A fact only one page of a test book holds (write_keeper_book), for recall, evidence and citations.
KEEPER = "The lighthouse keeper at Lyme was a gruff old sailor called Bartholomew Quince."

# A story whose characters (Harville and Benwick, each named 12 times) character_names finds; Fanny is
# named once, beside "Harville's sister".
_VOYAGE = [f"On day {n} of the voyage, Harville walked to the harbour with Benwick." for n in range(12)]
_VOYAGE.insert(6, "The lighthouse keeper, Harville, kept the great lamp burning through the storm.")
_VOYAGE.insert(9, "Harville's sister, Fanny, wrote letters from the town by the sea.")
VOYAGE = "\n\n".join(_VOYAGE)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative error allowed: a few roundings of float32 arithmetic; one rounding to bf16.
TOL = {torch.float32: 3e-5, torch.bfloat16: 1e-2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_oracle = pytest.mark.skipif(not ORACLE.is_dir(), reason=f"the authors' golden outputs are not at {ORACLE}")


def seed_for(case: tuple) -> int:
    """A seed of its own for each parametrized case, the same in every run and Python."""
    return zlib.crc32(repr(case).encode()) % 1000


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 on the CPU (complex tensors as their real pairs); out must be finite."""
    out, ref = (torch.view_as_real(t) if t.is_complex() else t for t in (out.detach().cpu(), ref.detach().cpu()))
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def cema_params(dim: int, ndim: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random CEMA parameters (alpha, delta, theta, gamma, omega) spread like the release's
    initialisation (gamma with an imaginary part)."""
    return (
        torch.randn(dim, ndim, 1, generator=gen) * 0.2,
        torch.randn(dim, ndim, 1, generator=gen) * 0.2,
        torch.randn(dim, 1, 1, generator=gen) * 2,
        torch.randn(dim, ndim, 2, generator=gen),
        torch.randn(dim, 1, generator=gen) * 0.25,
    )


def timestep_norm_inputs(
    batch: int,
    length: int,
    dim: int,
    groups: int,
    padding: bool,
    count: int,
    dtype: torch.dtype,
    gen: torch.Generator,
) -> tuple[torch.Tensor, NormStats, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, stats, weight, bias, padding mask) on DEVICE: x offset from zero (sums about a shift must not
    cancel), statistics fresh or carried (`count` tokens before the span, a different count per row)."""
    x = (torch.randn(batch, length, dim, generator=gen) * 3 + 5).to(dtype)
    if count:
        stats = NormStats(
            torch.full((batch,), count, dtype=torch.int64) + torch.arange(batch),
            torch.randn(batch, groups, generator=gen) + 5,
            torch.rand(batch, groups, generator=gen) + 8,
        )
    else:
        stats = NormStats(torch.zeros(batch, dtype=torch.int64), torch.zeros(batch, groups), torch.ones(batch, groups))
    weight, bias = torch.randn(dim, generator=gen) * 0.1, torch.randn(dim, generator=gen) * 0.1
    mask = torch.rand(batch, length, generator=gen) < 0.3 if padding else None
    stats = NormStats(stats.count.to(DEVICE), stats.mean.to(DEVICE), stats.var.to(DEVICE))
    return x.to(DEVICE), stats, weight.to(DEVICE), bias.to(DEVICE), None if mask is None else mask.to(DEVICE)


def run_cli(*args: str | Path, stdin: str | bytes | None = None):
    """`megadoc ARGS` in-process; the result has exit_code, stdout and stderr apart."""
    from typer.testing import CliRunner

    from megadoc.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def run_in_terminal(*args: str | Path, stream: str = "stdout", columns: int = 160) -> tuple[int, str]:
    """`megadoc ARGS` in a new process whose `stream` (stdout or stderr) is a pseudo-terminal, the
    other discarded: (exit status, everything written to the terminal, its escape codes removed)."""
    command = [sys.executable, "-c", "from megadoc.cli import main; main()", *map(str, args)]
    main, sub = pty.openpty()
    streams = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, stream: sub}
    env = os.environ | {"COLUMNS": str(columns)}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env, **streams)
    os.close(sub)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    return process.wait(timeout=120), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))


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
    from fpdf import FPDF

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


def write_keeper_book(path: Path) -> Path:
    """A three-page PDF of real prose whose second page alone names the lighthouse keeper (KEEPER)."""
    first, second, third = austen_paragraphs(3)
    return write_pdf(path, [first, f"{second} {KEEPER}", third])


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


def qasper_answer(**fields) -> dict:
    """One annotator's answer in Qasper's JSON, unanswerable=False and empty unless `fields` say."""
    answer = {
        "unanswerable": False,
        "extractive_spans": [],
        "yes_no": None,
        "free_form_answer": "",
        "evidence": [],
        "highlighted_evidence": [],
    }
    return {"answer": {**answer, **fields}, "annotation_id": "a", "worker_id": "w"}


def csv_text(header: list[str], rows: list[list]) -> str:
    """A CSV file's text: `header`, then `rows`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def tiny_recipe(tmp_path: Path, token_dir: Path, **changes):
    """A training recipe for the `tiny` preset (vocabulary 64) reading `token_dir`, writing tmp_path/run."""
    from megadoc.training.recipe import Recipe

    base = dict(
        out_dir=str(tmp_path / "run"),
        tokens=str(token_dir),
        model={"preset": "tiny", "vocab_size": 64},
        seq_len=64,
        batch_size=4,
        steps=40,
        lr=1e-2,
        warmup_steps=5,
        log_every=5,
        save_every=20,
    )
    return Recipe(**(base | changes))


def logged_losses(run_dir: Path) -> list[float]:
    """The losses a training run logged, in order."""
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def write_fairytaleqa(
    root: Path,
    packed: bool,
    sections: tuple[str, ...] = ("Once a {split} fox ran.\n", "Then it slept."),
    questions: tuple[tuple[str, str, str, str], ...] = (("action", "What ran?", "a fox", "the fox"),),
) -> Path:
    """The FairytaleQA layout, one story per split (``sections``, ``{split}`` filled in) with
    ``questions`` (attribute, question, answer1, answer4), as a tar.gz (``packed``) or a folder."""
    files = {}
    for split in ("train", "val"):
        base = f"FairytaleQA/data-by-train-split/{{}}/{split}/{split}-tale-{{}}.csv"
        files[base.format("section-stories", "story")] = csv_text(
            ["section", "text"], [[number, text.format(split=split)] for number, text in enumerate(sections, start=1)]
        )
        header = ["question_id", "local-or-sum", "cor_section", "attribute1", "attribute2", "question"]
        header += ["ex-or-im1", "answer1", "answer2", "answer3", "ex-or-im2", "answer4", "answer5", "answer6"]
        files[base.format("questions", "questions")] = csv_text(
            header,
            [
                [number, "local", 1, attribute, "", question, "explicit", first, "", "", "explicit", fourth, "", ""]
                for number, (attribute, question, first, fourth) in enumerate(questions, start=1)
            ],
        )
    if not packed:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text, encoding="utf-8")
        return root
    path = root / "fairytaleqa_by_split.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
