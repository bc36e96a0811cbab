"""The `megadoc` command line: ask, read, summarize, models, cache, convert, eval.

stdout carries only what was asked for (answers, summaries, tables, JSON); progress, warnings and
errors go to stderr. Bad input ends with one line, `error: ...`, and exit status 1; Ctrl-C during
a read saves what was read and exits with 130.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from megadoc.engine.checkpoint import CheckpointError
from megadoc.engine.generate import GenerationConfig
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache
from megadoc.pipeline.ingest import Document, IngestError, load_document
from megadoc.pipeline.progress import ReadProgress
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


# -- shared options --------------------------------------------------------------------------------

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
        with ReadProgress(stderr, label) as bar:
            read = self.reader.read(document, bar.update)
        seconds = read.seconds["read"]
        if read.status == "cached":
            stderr.print(f"{label}: {len(read.ids):,} tokens, from the cache", style="dim")
        else:
            speed = f" ({read.tokens_read / seconds:,.0f} tokens/s)" if seconds > 0 else ""
            verb = "resumed and read" if read.status == "resumed" else "read"
            stderr.print(f"{label}: {verb} {read.tokens_read:,} tokens in {seconds:.1f} s{speed}", style="dim")
        return read


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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
        typer.echo(f"error: {_one_line(error)}", err=True)
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


def emit(response: Response) -> None:
    """Stream a response to stdout as it is generated (leading whitespace dropped), then its sources."""
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
    sys.stdout.flush()


def _label(source: str) -> str:
    return "stdin" if source == "-" else Path(source).name


# -- ask -------------------------------------------------------------------------------------------


@app.command()
def ask(
    file: Annotated[
        str, typer.Argument(help="The document: PDF, text, Markdown, EPUB, VTT, SRT, meeting JSON, or - for stdin.")
    ],
    question: Annotated[
        list[str] | None, typer.Argument(help="One or more questions; the document is read once.")
    ] = None,
    questions: Annotated[
        Path | None, typer.Option("--questions", help="A file of questions, one per line.", dir_okay=False)
    ] = None,
    model: ModelOption = registry.DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 256,
    temperature: TemperatureOption = 0.0,
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    recall: RecallOption = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per question (answer, citations, tokens_read, timings).")
    ] = False,
    password: Annotated[str | None, typer.Option(help="Password of an encrypted PDF.")] = None,
    device: DeviceOption = "auto",
    no_cache: NoCacheOption = False,
    quiet: QuietOption = False,
) -> None:
    """Answer questions about a document, citing its pages or timestamps.

    Reading is the slow part; its result is cached, so later questions about the same document
    start answering at once. Ctrl-C while reading keeps what was read: run again to resume.

    Example: megadoc ask persuasion.pdf "Who is Captain Wentworth?"
    """
    with user_errors():
        asked = _questions(question or [], questions)
        ingest_start = time.perf_counter()
        document = load(file, password)
        ingest_seconds = time.perf_counter() - ingest_start
        session = Session.open(model, device, no_cache, quiet)
        read = session.read(document, _label(file))
        config = generation(max_tokens, temperature, seed, no_repeat_ngram)
        for number, text in enumerate(asked):
            response = session.reader.ask(read, text, config, recall=recall)
            if as_json:
                response.collect()
                row = _answer_json(text, response, read, session, ingest_seconds, recall)
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                continue
            if len(asked) > 1:
                sys.stdout.write(("\n" if number else "") + f"Q: {text}\nA: ")
            emit(response)


def _questions(given: Sequence[str], questions_file: Path | None) -> list[str]:
    asked = [q for q in given if q.strip()]
    if questions_file is not None:
        try:
            lines = questions_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{questions_file}: cannot read the questions ({error})") from None
        asked += [line.strip() for line in lines if line.strip()]
    if not asked:
        raise UsageError("no question given: add one after the file, or use --questions FILE")
    return asked


def _answer_json(
    question: str, response: Response, read: ReadDocument, session: Session, ingest_seconds: float, recall: bool
) -> dict:
    return {
        "question": question,
        "answer": response.text.strip(),
        "citations": [c.to_dict() for c in response.citations],
        "document": {
            "source": read.document.source,
            "title": read.document.title,
            "kind": read.document.kind,
            "tokens": len(read.ids),
        },
        "model": session.loaded.name,
        "recall": recall,
        "cache": read.status,
        "tokens_read": read.tokens_read,
        "timings": {
            "ingest_s": round(ingest_seconds, 4),
            "load_model_s": round(session.load_seconds, 4),
            **{f"{name}_s": round(value, 4) for name, value in read.seconds.items()},
            "first_token_s": round(response.first_piece_seconds or 0.0, 4),
            "answer_s": round(response.seconds, 4),
        },
    }


# -- read ------------------------------------------------------------------------------------------


@app.command()
def read(
    file: Annotated[str, typer.Argument(help="The document: any format `ask` reads (not stdin).")],
    model: ModelOption = registry.DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 256,
    temperature: TemperatureOption = 0.0,
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    recall: RecallOption = True,
    password: Annotated[str | None, typer.Option(help="Password of an encrypted PDF.")] = None,
    device: DeviceOption = "auto",
    no_cache: NoCacheOption = False,
) -> None:
    """Open a document in the terminal reader: the text on the left, questions and cited answers
    on the right. Quitting during the first read keeps what was read; the next open resumes.

    Example: megadoc read persuasion.pdf
    """
    from megadoc.tui.app import ReaderApp

    with user_errors():
        if file == "-":
            raise UsageError("read needs a file: the terminal is its input, so it cannot read stdin")
    config = generation(max_tokens, temperature, None, no_repeat_ngram)
    ReaderApp(
        file, model=model, device=device, config=config, recall=recall, password=password, use_cache=not no_cache
    ).run()


# -- summarize -------------------------------------------------------------------------------------


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
    target = None if out is None else out / f"{_label(source)}.summary.{output_format}"
    if target is not None and target.exists() and not force:
        return Outcome(source, "skipped", note=f"{target} exists")
    start = time.perf_counter()
    try:
        document = load(source, None)
        read = session.read(document, _label(source))
    except (IngestError, CheckpointError) as error:
        typer.echo(f"error: {_one_line(error)}", err=True)
        return Outcome(source, "failed", note=_one_line(error))
    response = session.reader.summarize(read, config, query=query, recall=recall)
    if target is None and output_format == "md":
        if batch > 1:
            sys.stdout.write(f"# {document.title or _label(source)}\n\n")
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
    heading = f"# {document.title or _label(document.source)}\n\n"
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


# -- models, convert -------------------------------------------------------------------------------


@app.command("models")
def list_models() -> None:
    """List the installed models: shipped ones and the user's (MEGADOC_MODELS_DIR or the user data dir)."""
    table = Table()
    for column in ("name", "origin", "status", "parameters", "size"):
        table.add_column(column, justify="right" if column in ("parameters", "size") else "left", no_wrap=True)
    table.add_column("path", overflow="fold")
    for entry in registry.installed_models():
        status = "installed" if entry.installed else "not installed yet"
        parameters = f"{entry.parameters / 1e6:,.1f} M" if entry.parameters is not None else ""
        size = _size(entry.size_bytes) if entry.size_bytes else ""
        table.add_row(entry.name, entry.origin, status, parameters, size, str(entry.path))
    stdout.print(table)
    stderr.print(f"user models: {registry.user_models_dir()}", style="dim")


@app.command()
def convert(
    reference_dir: Annotated[
        Path,
        typer.Argument(
            help="A Megalodon release checkpoint (config.json, consolidate_config.json, consolidated*.pth)."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="Where to write our format (config.json, model.safetensors, tokenizer.model).")
    ],
    force: Annotated[bool, typer.Option(help="Overwrite a model already in OUT_DIR.")] = False,
) -> None:
    """Convert the authors' checkpoint release to megadoc's format (no pickle code is ever run).

    Example: megadoc convert ~/megalodon-7b ~/.local/share/megadoc/models/7b
    """
    from megadoc.engine.checkpoint import convert_reference, is_reference_checkpoint

    with user_errors():
        if not reference_dir.is_dir() or not is_reference_checkpoint(reference_dir):
            raise UsageError(f"{reference_dir}: not a reference checkpoint (no consolidate_config.json)")
        if (out_dir / "model.safetensors").exists() and not force:
            raise UsageError(f"{out_dir} already holds a model; use --force to overwrite it")
        convert_reference(reference_dir, out_dir)
        if not (out_dir / "tokenizer.model").is_file():
            warn(f"{reference_dir} has no tokenizer.model; copy one into {out_dir} before using the model")
        typer.echo(str(out_dir))


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return ""


# -- cache -----------------------------------------------------------------------------------------


@cache_app.command("ls")
def cache_ls() -> None:
    """List cached document states (newest first)."""
    cache = StateCache()
    entries = cache.entries()
    table = Table()
    for column in ("key", "document", "model", "tokens", "status", "size"):
        wrap = column in ("document", "model")
        table.add_column(column, justify="right" if column in ("tokens", "size") else "left", no_wrap=not wrap)
    for entry in entries:
        meta = entry.metadata
        if meta.get("unreadable"):
            table.add_row(entry.key[:12], "?", "?", "", "unreadable", _size(entry.size_bytes))
            continue
        total = int(meta.get("tokens_total") or 0)
        status = "complete" if entry.complete else f"partial {entry.position / max(total, 1):.0%}"
        document = meta.get("title") or Path(str(meta.get("source", "?"))).name
        model = Path(str(meta.get("model_name", ""))).name
        table.add_row(entry.key[:12], document, model, f"{total:,}", status, _size(entry.size_bytes))
    stdout.print(table)
    stderr.print(f"{len(entries)} cached in {cache.states}", style="dim")


@cache_app.command("rm")
def cache_rm(
    entries: Annotated[
        list[str], typer.Argument(help="Keys (or their first characters, from `cache ls`) or document paths.")
    ],
) -> None:
    """Remove cached states, by key or by the document they were read from."""
    with user_errors():
        cache = StateCache()
        known = cache.entries()
        chosen = []
        for wanted in entries:
            path = os.path.abspath(wanted)
            matches = [e for e in known if e.key.startswith(wanted) or e.metadata.get("source") == path]
            if not matches:
                raise UsageError(f"no cached state matches {wanted!r} (see `megadoc cache ls`)")
            if len(matches) > 1 and not any(e.metadata.get("source") == path for e in matches):
                raise UsageError(f"{wanted!r} matches {len(matches)} cached states; give more of the key")
            chosen += matches
        for entry in chosen:
            cache.remove(entry.key)
        typer.echo(f"removed {len(chosen)} cached state(s)", err=True)


@cache_app.command("clear")
def cache_clear(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Remove every cached state."""
    cache = StateCache()
    if not yes and not typer.confirm(f"remove every cached state in {cache.states}?", err=True):
        raise typer.Exit(1)
    typer.echo(f"removed {cache.clear()} cached state(s)", err=True)


# -- eval ------------------------------------------------------------------------------------------


@eval_app.command("ppl")
def eval_ppl(
    files: Annotated[list[str], typer.Argument(help="Held-out texts (any format `ask` reads), never trained on.")],
    context: Annotated[str, typer.Option(help="Comma-separated context lengths in tokens.")] = "1024,4096,16384,65536",
    model: ModelOption = registry.DEFAULT_MODEL,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Bits per byte at each context length, on the same final tokens of each text.

    Let T be the smallest context length given. At context length N, a fresh state reads BOS and
    the last N tokens of a text; the loss counted is the loss on the text's final T tokens only,
    so every N scores the same tokens and differs only in how much text came before them. Bits per
    byte = summed loss in nats / ln 2 / UTF-8 bytes of those tokens' text, over every text of at
    least N tokens (shorter texts are left out at that N; the output says how many were used).

    Example: megadoc eval ppl heldout/*.txt --context 1024,4096,16384,65536 --json
    """
    from megadoc.evals.perplexity import bits_per_byte

    with user_errors():
        contexts = _context_lengths(context)
        texts = [load(source, None).text for source in files]
        loaded = registry.load(model, registry.choose_device(device))
        results = bits_per_byte(loaded.model, loaded.tokenizer, texts, contexts)
    if as_json:
        row = {
            "model": loaded.name,
            "files": files,
            "target_tokens": min(contexts),
            "results": [r.to_dict() for r in results],
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(caption=f"loss on the final {min(contexts):,} tokens of each text")
    for column in ("context", "bits/byte", "texts", "bytes"):
        table.add_column(column, justify="right")
    for r in results:
        value = "n/a (no text that long)" if r.bits_per_byte is None else f"{r.bits_per_byte:.4f}"
        table.add_row(f"{r.context:,}", value, str(r.texts), f"{r.bytes:,}")
    stdout.print(table)


def _context_lengths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--context takes comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError("--context needs at least one positive length")
    return sorted(set(values))


@eval_app.command("copy")
def eval_copy(
    files: Annotated[list[str], typer.Argument(help="Texts to take passages from (any format `ask` reads).")],
    passage_tokens: Annotated[int, typer.Option(help="Tokens per passage (read twice in one attention chunk).")] = 256,
    passages: Annotated[int, typer.Option(help="Passages per text, evenly spaced.")] = 8,
    model: ModelOption = registry.DEFAULT_MODEL,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """The repeat test: loss on passages read once, then read again right after.

    A model that copies from what its attention holds (as answering from recalled passages needs)
    scores the second reading far below the first; one that cannot scores them alike.

    Example: megadoc eval copy heldout/*.txt --json
    """
    from megadoc.evals.perplexity import repeat_loss

    with user_errors():
        texts = [load(source, None).text for source in files]
        loaded = registry.load(model, registry.choose_device(device))
        try:
            result = repeat_loss(loaded.model, loaded.tokenizer, texts, passage_tokens, passages)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if as_json:
        sys.stdout.write(json.dumps({"model": loaded.name, "files": files, **result.to_dict()}) + "\n")
        return
    table = Table(caption=f"{result.passages} passages of {result.passage_tokens} tokens")
    for column in ("first reading (nats/token)", "second reading", "gain"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.first:.3f}", f"{result.second:.3f}", f"{result.first - result.second:.3f}")
    stdout.print(table)


@eval_app.command("who")
def eval_who(
    books: Annotated[Path, typer.Option(help="Folder of the books (<name>.txt or <name>.txt.gz), e.g. shared books/.")],
    questions: Annotated[
        Path | None, typer.Option(help="Questions JSON (default: megadoc's own, about held-out novels).")
    ] = None,
    model: ModelOption = registry.DEFAULT_MODEL,
    device: DeviceOption = "auto",
    recall: RecallOption = True,
    max_tokens: MaxTokensOption = 24,
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the table.")] = False,
) -> None:
    """Who-questions about novels: does the answer name the right character? Beside the model, the
    floor of naming the book's most frequent character in the recalled passages, and how often
    those passages name a right answer at all.

    Example: megadoc eval who --books ../shared/data/books --json
    """
    from megadoc.evals.who import load_questions, run_who

    with user_errors():
        try:
            asked = load_questions(questions)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise UsageError(f"{questions}: not a who-questions file ({_one_line(error)})") from None
        loaded = registry.load(model, registry.choose_device(device))
        reader = Reader(loaded, cache=None)
        config = generation(max_tokens, 0.0, None, no_repeat_ngram)
        try:
            with _example_progress(len(asked)) as update:
                results = run_who(reader, books, asked, config, recall, on_progress=update)
        except FileNotFoundError as error:
            raise UsageError(_one_line(error)) from None
    correct = sum(r.correct for r in results)
    floor = sum(r.floor_correct for r in results)
    in_evidence = sum(r.in_evidence for r in results)
    if as_json:
        row = {
            "model": loaded.name,
            "recall": recall,
            "no_repeat_ngram": no_repeat_ngram,
            "count": len(results),
            "correct": correct,
            "floor_correct": floor,
            "in_evidence": in_evidence,
            "results": [r.to_dict() for r in results],
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(
        caption=f"{loaded.name} ({'recall' if recall else 'plain'}): {correct} of {len(results)} right; "
        f"most frequent name in the recalled passages: {floor}; "
        f"a right name is in those passages: {in_evidence}"
    )
    for column in ("question", "answer", "right", "floor", "in passages"):
        table.add_column(column)
    for r in results:
        floor_cell = f"{r.floor_answer} ({'yes' if r.floor_correct else 'no'})"
        table.add_row(r.question, r.answer, "yes" if r.correct else "no", floor_cell, "yes" if r.in_evidence else "no")
    stdout.print(table)


@eval_app.command("scrolls")
def eval_scrolls(
    task: Annotated[str, typer.Option(help="narrativeqa, qasper or qmsum.")],
    data: Annotated[
        Path,
        typer.Option(
            help="The task's files: QMSum meeting JSON folder, NarrativeQA folder (documents.csv, "
            "qaps.csv, stories), Qasper JSON file or folder, or a SCROLLS .jsonl file."
        ),
    ],
    split: Annotated[str, typer.Option(help="Split, for the original NarrativeQA and Qasper files.")] = "validation",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N examples.")] = None,
    model: ModelOption = registry.DEFAULT_MODEL,
    engine: Annotated[
        str,
        typer.Option(
            help="megadoc, lead (the first 10 sentences: a floor), majority (the most frequent training "
            "answer: a QA floor), hf (a Hugging Face model dir) or vllm."
        ),
    ] = "megadoc",
    train_data: Annotated[
        Path | None,
        typer.Option(help="Training examples for --engine majority (default: --data's train split)."),
    ] = None,
    recall: RecallOption = True,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Answer length (default by task).")
    ] = None,
    device: DeviceOption = "auto",
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    out: Annotated[
        Path | None, typer.Option(help="Per-example JSONL (resumable); default scrolls-<task>-<model>-<mode>.jsonl.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the Markdown table.")] = False,
) -> None:
    """Score a model on a SCROLLS task with the official metrics; our row beside the paper's.

    Example: megadoc eval scrolls --task qmsum --data data/qmsum/val --limit 20
    """
    from megadoc.evals.metrics import TASKS
    from megadoc.evals.report import results_table
    from megadoc.evals.runner import run_eval

    with user_errors():
        if task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
        examples = _scrolls_examples(task, data, split)
        if engine == "majority":
            predictor, name = _majority_predictor(task, train_data or data)
        else:
            predictor, name = _predictor(engine, model, device, recall, max_tokens, no_repeat_ngram)
        target = out or Path(f"scrolls-{task}-{Path(name).name}.jsonl".replace(" ", "-"))
        with _example_progress(len(examples[:limit])) as update:
            summary = run_eval(task, examples, predictor, target, limit=limit, on_progress=update)
    if as_json:
        row = {
            "task": task,
            "model": name,
            "engine": engine,
            "recall": recall if engine == "megadoc" else None,
            "no_repeat_ngram": no_repeat_ngram if engine == "megadoc" else None,
            "count": summary.count,
            "score": summary.score,
            "metrics": summary.metrics,
            "seconds": summary.seconds,
            "out": str(target),
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    sys.stdout.write(results_table({name: {task: summary.score}}))
    stderr.print(f"{summary.count} examples, {summary.seconds:.1f} s; per-example rows in {target}", style="dim")


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="Per-example JSONL of run A (from `eval scrolls --out`).")],
    run_b: Annotated[Path, typer.Argument(help="Per-example JSONL of run B.")],
    task: Annotated[str, typer.Option(help="narrativeqa, qasper or qmsum.")],
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Is A better than B? Both scores on their shared examples and a paired bootstrap 95% interval of A - B.

    Example: megadoc eval compare qmsum-recall.jsonl qmsum-plain.jsonl --task qmsum
    """
    from megadoc.evals.metrics import TASKS
    from megadoc.evals.report import paired_bootstrap

    with user_errors():
        if task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
        rows_a, rows_b = _run_metrics(run_a), _run_metrics(run_b)
        try:
            result = paired_bootstrap(task, rows_a, rows_b, resamples=resamples)
        except (ValueError, KeyError) as error:
            raise UsageError(f"cannot compare {run_a} and {run_b}: {_one_line(error)}") from None
    if as_json:
        sys.stdout.write(json.dumps({**asdict(result), "difference": result.difference}) + "\n")
        return
    sys.stdout.write(
        f"{result.count} shared examples: A {result.score_a:.2f}, B {result.score_b:.2f}, "
        f"A - B {result.difference:+.2f} (95% interval {result.low:+.2f} to {result.high:+.2f})\n"
    )


def _run_metrics(path: Path) -> dict[str, dict[str, float]]:
    """Example id -> metrics from a per-example JSONL."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {row["id"]: row["metrics"] for row in rows}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not a per-example results file ({_one_line(error)})") from None


def _scrolls_examples(task: str, data: Path, split: str) -> list:
    from megadoc.evals import scrolls

    try:
        if data.suffix == ".jsonl":
            return scrolls.load_scrolls_jsonl(data, task)
        if task == "qmsum":
            return scrolls.load_qmsum(data)
        if task == "narrativeqa":
            return scrolls.load_narrativeqa(data, split)
        return scrolls.load_qasper(data, split)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{data}: cannot load {task} examples ({_one_line(error)})") from None


def _majority_predictor(task: str, train_data: Path):
    from megadoc.evals.baselines import MajorityAnswerBaseline

    train = _scrolls_examples(task, train_data, "train")
    try:
        baseline = MajorityAnswerBaseline.from_examples(train)
    except ValueError:
        raise UsageError(
            f"--engine majority needs training answers: none in the train split of {train_data} (see --train-data)"
        ) from None
    return baseline, f"majority answer ({baseline.answer!r})"


def _predictor(engine: str, model: str, device: str, recall: bool, max_tokens: int | None, no_repeat_ngram: int):
    if engine == "megadoc":
        from megadoc.evals.predictor import MegalodonPredictor

        loaded = registry.load(model, registry.choose_device(device))
        reader = Reader(loaded, cache=None)
        predictor = MegalodonPredictor(reader, recall, max_tokens, no_repeat_ngram)
        return predictor, f"{loaded.name} ({'recall' if recall else 'plain'})"
    if engine == "lead":
        from megadoc.evals.baselines import LeadBaseline

        return LeadBaseline(), "lead-10 (first 10 sentences)"
    if engine not in ("hf", "vllm"):
        raise UsageError(f"--engine must be megadoc, lead, majority, hf or vllm, not {engine!r}")
    if not Path(model).is_dir():
        raise UsageError(f"--engine {engine} needs --model DIR (a Hugging Face model directory)")
    from megadoc.evals.baselines import HFPredictor, VLLMPredictor

    try:
        if engine == "hf":
            return HFPredictor(
                model, max_new_tokens=max_tokens or 128, device=str(registry.choose_device(device))
            ), model
        return VLLMPredictor(model, max_new_tokens=max_tokens or 128), model
    except (ImportError, OSError, ValueError) as error:
        raise UsageError(f"--engine {engine}: {_one_line(error)}") from None


@contextmanager
def _example_progress(total: int) -> Iterator:
    progress = Progress(
        TextColumn("examples"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    task = progress.add_task("examples", total=total)
    with progress:
        yield lambda done, count: progress.update(task, completed=done, total=count)


def main() -> None:
    app()
