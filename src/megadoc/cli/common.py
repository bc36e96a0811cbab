"""What the commands share: the Typer apps, the consoles, options, the loaded model and reader,
and the turning of known failures into one line and an exit status."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from megadoc.display import one_line
from megadoc.engine import CheckpointError, GenerationConfig
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache
from megadoc.pipeline.ingest import Document, IngestError, load_document
from megadoc.pipeline.progress import ProgressBar
from megadoc.pipeline.recall import Citation
from megadoc.pipeline.registry import LoadedModel, ModelError
from megadoc.pipeline.session import ReadDocument, Reader, ReadInterrupted, Response

app = typer.Typer(
    help="Ask questions of, and summarize, documents of any length with a streaming Megalodon model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(help="The cache of read documents (model states).", no_args_is_help=True)
eval_app = typer.Typer(
    help="Evaluations: SCROLLS tasks and bits per byte against context length.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
app.add_typer(eval_app, name="eval")

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


class UsageError(Exception):
    """Input the user must change; shown as one line."""


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Installed model name (see `megadoc models`) or a model directory.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda (bf16 and Triton kernels on CUDA).")]
RecallOption = Annotated[
    bool,
    typer.Option(
        "--recall/--no-recall",
        help="Re-read the passages that best match the question before answering, and cite them. "
        "--no-recall gives the paper's plain mode (the state and the document's tail only).",
    ),
]
NamesOption = Annotated[
    bool,
    typer.Option(
        "--names/--no-names",
        help="Answer a question asking for a person (Who ...?) with the name of the recalled passages that "
        "the model finds likeliest; --no-names lets the model write the answer.",
    ),
]
MaxTokensOption = Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens to generate.")]
TemperatureOption = Annotated[float, typer.Option(min=0.0, help="Sampling temperature; 0 is greedy.")]
# No 2-gram twice in an answer: on all 272 QMSum val queries (H100, recall) `mini` scored 9.70 with
# it, 8.54 with 3-grams banned, 8.46 with 4-grams (paired interval of 2 over 3: +0.70 to +1.66),
# 7.11 vs 8.90 greedy vs 3 on the first 40 (src/megadoc/evals/RESULTS.md).
DEFAULT_NO_REPEAT_NGRAM = 2
NoRepeatOption = Annotated[
    int, typer.Option("--no-repeat-ngram", min=0, help="Never repeat an n-gram of the answer (0: off).")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Neither use nor fill the state cache.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or timing lines on stderr.")]


@dataclass
class Session:
    """A loaded model and a reader over the cache: what ask and summarize share."""

    loaded: LoadedModel
    reader: Reader
    load_seconds: float
    quiet: bool

    @classmethod
    def open(cls, model: str, device: str, no_cache: bool, quiet: bool) -> Session:
        start = time.perf_counter()
        cache = None if no_cache else StateCache()
        fingerprints = None if cache is None else cache.fingerprints_file
        loaded = registry.load(model, registry.choose_device(device), fingerprints)
        reader = Reader(loaded, cache, warn=warn)
        return cls(loaded, reader, time.perf_counter() - start, quiet)

    def read(self, document: Document, label: str) -> ReadDocument:
        if self.quiet:
            return self.reader.read(document)
        with ProgressBar(stderr, label) as bar:
            read = self.reader.read(document, bar.update)
        seconds = read.seconds["read"]
        if read.status == "cached":
            stderr.print(f"{label}: {len(read.ids):,} tokens, from the cache", style="dim")
        elif read.tokens_read == 0:  # all of it is the tail, read with the question
            stderr.print(f"{label}: {len(read.ids):,} tokens, under one chunk: read with the question", style="dim")
        else:
            speed = f" ({read.tokens_read / seconds:,.0f} tokens/s)" if seconds > 0 else ""
            verb = "resumed and read" if read.status == "resumed" else "read"
            stderr.print(f"{label}: {verb} {read.tokens_read:,} tokens in {seconds:.1f} s{speed}", style="dim")
        return read


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known failures become `error: <one line>` and exit 1; Ctrl-C becomes exit 130."""
    try:
        yield
    except ReadInterrupted as stop:
        if stop.tokens_saved:
            typer.echo(f"interrupted; {stop.tokens_saved} tokens read are saved, run again to resume", err=True)
        else:
            typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except (IngestError, ModelError, CheckpointError, UsageError) as error:
        typer.echo(f"error: {one_line(error)}", err=True)
        raise typer.Exit(1) from None


def load(source: str, password: str | None) -> Document:
    document = load_document(source, password=password)
    for message in document.warnings:
        warn(message)
    return document


def generation(max_tokens: int, temperature: float, seed: int | None, no_repeat_ngram: int) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=0.95 if temperature else 1.0,
        seed=seed,
        no_repeat_ngram=no_repeat_ngram,
    )


def emit(response: Response, evidence: bool = False) -> None:
    """Stream a response to stdout as it is generated (leading whitespace dropped), then its sources;
    with `evidence`, the recalled passages as quotes and the support check's note."""
    started = False
    for piece in response:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    if not response.text.endswith("\n"):
        sys.stdout.write("\n")
    if response.citations:
        sys.stdout.write("Sources: " + "; ".join(c.label for c in response.citations) + "\n")
    note = response.support.note if response.support is not None else None
    if evidence:
        sys.stdout.write(evidence_block(response.evidence, note))
    elif note:
        warn(f"answer {note}")
    sys.stdout.flush()


def evidence_block(quotes: list[Citation], note: str | None) -> str:
    """What `--evidence` prints under an answer: the support note (when not supported), then each
    recalled passage as a quote with its place."""
    lines = [f"[{note}]"] if note else []
    if quotes:
        lines.append("Evidence:")
        lines += [f"  {evidence_quote(quote)}" for quote in quotes]
    return "".join(line + "\n" for line in lines)


def evidence_quote(quote: Citation) -> str:
    """`p. 12: “the quoted words...”`"""
    return f"{quote.label}: \u201c{quote.excerpt}\u201d"


def display_name(source: str) -> str:
    """How progress lines and summary headings name a source: its file name, or stdin."""
    return "stdin" if source == "-" else Path(source).name
