"""`megadoc summarize`: many documents in one run, resumable with --out."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from megadoc.cli.common import (
    DEFAULT_NO_REPEAT_NGRAM,
    DeviceOption,
    MaxTokensOption,
    ModelOption,
    NoCacheOption,
    NoRepeatOption,
    QuietOption,
    RecallOption,
    Session,
    TemperatureOption,
    UsageError,
    app,
    display_name,
    emit,
    generation,
    load,
    stderr,
    user_errors,
)
from megadoc.display import one_line
from megadoc.engine import CheckpointError, GenerationConfig
from megadoc.pipeline import registry
from megadoc.pipeline.ingest import Document, IngestError
from megadoc.pipeline.session import Response


@dataclass
class Outcome:
    source: str
    status: str  # done, skipped, failed
    tokens: int = 0
    seconds: float = 0.0
    note: str = ""


@app.command()
def summarize(
    files: Annotated[list[str], typer.Argument(help="Documents to summarize (any format `ask` reads).")],
    query: Annotated[str | None, typer.Option(help="Write a summary focused on this request.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write each summary to OUT/<file name>.summary.md (or .json) instead of stdout.", file_okay=False
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    force: Annotated[bool, typer.Option(help="Redo summaries whose output file already exists.")] = False,
    model: ModelOption = registry.DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 300,
    temperature: TemperatureOption = 0.0,
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    recall: RecallOption = True,
    device: DeviceOption = "auto",
    no_cache: NoCacheOption = False,
    quiet: QuietOption = False,
) -> None:
    """Summarize documents, many in one run; a failed file is reported and the batch goes on.

    With --out, files whose summary already exists are skipped (unless --force), so an
    interrupted batch can simply be run again. A table of what was done ends a batch (stderr);
    the exit status is 1 when any file failed.

    Example: megadoc summarize transcripts/*.vtt --out summaries/
    """
    with user_errors():
        if output_format not in ("md", "json"):
            raise UsageError(f"--format must be md or json, not {output_format!r}")
        config = generation(max_tokens, temperature, None, no_repeat_ngram)
        session = Session.open(model, device, no_cache, quiet)
        outcomes = [
            _summarize_one(session, source, query, out, output_format, force, config, recall, len(files))
            for source in files
        ]
        if len(files) > 1:
            stderr.print(_outcome_table(outcomes))
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


def _summarize_one(
    session: Session,
    source: str,
    query: str | None,
    out: Path | None,
    output_format: str,
    force: bool,
    config: GenerationConfig,
    recall: bool,
    batch: int,
) -> Outcome:
    target = None if out is None else out / f"{display_name(source)}.summary.{output_format}"
    if target is not None and target.exists() and not force:
        return Outcome(source, "skipped", note=f"{target} exists")
    start = time.perf_counter()
    try:
        document = load(source, None)
        read = session.read(document, display_name(source))
    except (IngestError, CheckpointError) as error:
        typer.echo(f"error: {one_line(error)}", err=True)
        return Outcome(source, "failed", note=one_line(error))
    response = session.reader.summarize(read, config, query=query, recall=recall)
    if target is None and output_format == "md":
        if batch > 1:
            sys.stdout.write(f"# {document.title or display_name(source)}\n\n")
        emit(response)
        if batch > 1:
            sys.stdout.write("\n")
    else:
        response.collect()
        text = _summary_text(document, response, query, output_format, session.loaded.name)
        if target is None:
            sys.stdout.write(text)
        else:
            _write_atomically(target, text)
    return Outcome(source, "done", len(read.ids), time.perf_counter() - start, str(target or ""))


def _summary_text(document: Document, response: Response, query: str | None, output_format: str, model: str) -> str:
    summary = response.text.strip()
    if output_format == "json":
        row = {
            "source": document.source,
            "title": document.title,
            "query": query,
            "summary": summary,
            "citations": [c.to_dict() for c in response.citations],
            "model": model,
        }
        return json.dumps(row, ensure_ascii=False) + "\n"
    heading = f"# {document.title or display_name(document.source)}\n\n"
    request = f"Request: {query}\n\n" if query else ""
    sources = "\n\nSources: " + "; ".join(c.label for c in response.citations) if response.citations else ""
    return f"{heading}{request}{summary}{sources}\n"


def _write_atomically(path: Path, text: str) -> None:
    """A killed run must not leave a half-written summary that the next run would skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _outcome_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="megadoc summarize")
    for column in ("file", "status", "tokens", "seconds", "note"):
        table.add_column(column, justify="right" if column in ("tokens", "seconds") else "left")
    styles = {"done": "green", "skipped": "yellow", "failed": "red"}
    for o in outcomes:
        tokens = f"{o.tokens:,}" if o.tokens else ""
        seconds = f"{o.seconds:.1f}" if o.status == "done" else ""
        table.add_row(o.source, f"[{styles[o.status]}]{o.status}[/]", tokens, seconds, o.note)
    counts = {status: sum(o.status == status for o in outcomes) for status in styles}
    table.caption = ", ".join(f"{n} {status}" for status, n in counts.items())
    return table
