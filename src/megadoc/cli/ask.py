"""`megadoc ask` (answers on stdout, or JSON) and `megadoc read` (the terminal reader)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from megadoc.cli.common import (
    DEFAULT_NO_REPEAT_NGRAM,
    DeviceOption,
    MaxTokensOption,
    ModelOption,
    NamesOption,
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
    user_errors,
)
from megadoc.pipeline import registry
from megadoc.pipeline.session import ReadDocument, Response


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
    names: NamesOption = True,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per question (answer, citations, evidence, support, tokens_read, timings)."
        ),
    ] = False,
    evidence: Annotated[
        bool | None,
        typer.Option(
            "--evidence/--no-evidence",
            help="Under each answer, the recalled passages that best match the question, quoted with their "
            "page/line/time, and a note when the answer is not found in the document. "
            "Default: on when stdout is a terminal.",
            show_default=False,
        ),
    ] = None,
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
        read = session.read(document, display_name(file))
        config = generation(max_tokens, temperature, seed, no_repeat_ngram)
        for number, text in enumerate(asked):
            response = session.reader.ask(read, text, config, recall=recall, names=names)
            if as_json:
                response.collect()
                row = _answer_json(text, response, read, session, ingest_seconds, recall)
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                continue
            if len(asked) > 1:
                sys.stdout.write(("\n" if number else "") + f"Q: {text}\nA: ")
            emit(response, evidence=sys.stdout.isatty() if evidence is None else evidence)


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
        "evidence": [c.to_dict() for c in response.evidence],
        "support": None if response.support is None else response.support.to_dict(),
        "document": {
            "source": read.document.source,
            "title": read.document.title,
            "kind": read.document.kind,
            "tokens": len(read.ids),
        },
        "model": session.loaded.name,
        "recall": recall,
        "names": response.names,  # the names a who-question's answer was chosen from; null: written by the model
        "cache": read.status,
        "index": read.index_status,  # the passage index: "cached", "built", or null when unused
        "tokens_read": read.tokens_read,
        "timings": {
            "ingest_s": round(ingest_seconds, 4),
            "load_model_s": round(session.load_seconds, 4),
            **{f"{name}_s": round(value, 4) for name, value in read.seconds.items()},
            "first_token_s": round(response.first_piece_seconds or 0.0, 4),
            "answer_s": round(response.seconds, 4),
        },
    }


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
