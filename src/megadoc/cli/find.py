"""`megadoc find FILE QUERY`: the passages recall would feed for QUERY, ranked, with their places;
no model is loaded (only its tokenizer and config, which cut the passages as `ask` does), nothing
is generated, so it is quick and as useful with a weak model as with a strong one."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from megadoc.cli.common import ModelOption, UsageError, app, evidence_quote, load, stderr, user_errors
from megadoc.engine import MegalodonConfig, Tokenizer
from megadoc.pipeline import registry
from megadoc.pipeline.recall import PassageIndex, passage_size
from megadoc.pipeline.registry import ModelError


@app.command()
def find(
    file: Annotated[str, typer.Argument(help="The document: any format `ask` reads, or - for stdin.")],
    query: Annotated[str, typer.Argument(help="Words to look for (ranked by BM25, as recall ranks passages).")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most passages to show.")] = 5,
    model: ModelOption = registry.DEFAULT_MODEL,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: the query and the ranked passages.")
    ] = False,
    password: Annotated[str | None, typer.Option(help="Password of an encrypted PDF.")] = None,
) -> None:
    """Show the passages that best match a query, best first, each quoted with its page/line/time.

    Example: megadoc find persuasion.pdf "Captain Wentworth's ship"
    """
    with user_errors():
        if not query.strip():
            raise UsageError("the query is empty")
        start = time.perf_counter()
        document = load(file, password)
        tokenizer, chunk_size = _tokenizer(model)
        _, offsets = tokenizer.encode_with_offsets(document.text)
        found = PassageIndex.build(document, offsets, passage_size(chunk_size)).search(query, limit)
        seconds = time.perf_counter() - start
    if as_json:
        row = {
            "query": query,
            "document": {"source": document.source, "title": document.title, "kind": document.kind},
            "passages": [quote.to_dict() for quote in found],
            "seconds": round(seconds, 4),
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if not found:
        stderr.print(f"no passage matches {query!r}", style="dim")
    for rank, quote in enumerate(found, start=1):
        sys.stdout.write(f"{rank}. {evidence_quote(quote)}\n")


def _tokenizer(model: str) -> tuple[Tokenizer, int]:
    """The model's tokenizer and attention chunk size, without loading its weights."""
    directory = registry.resolve(model)
    try:
        return Tokenizer.load(directory / "tokenizer.model"), MegalodonConfig.load(directory / "config.json").chunk_size
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"{directory}: cannot read its tokenizer or config ({error})") from None
