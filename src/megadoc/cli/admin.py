"""`megadoc models`, `megadoc convert` and `megadoc cache ls|rm|clear`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from megadoc.cli.common import (
    UsageError,
    app,
    cache_app,
    stderr,
    stdout,
    user_errors,
    warn,
)
from megadoc.display import byte_size
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache


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
        size = byte_size(entry.size_bytes) if entry.size_bytes else ""
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
    from megadoc.engine import convert_reference, is_reference_checkpoint

    with user_errors():
        if not reference_dir.is_dir() or not is_reference_checkpoint(reference_dir):
            raise UsageError(f"{reference_dir}: not a reference checkpoint (no consolidate_config.json)")
        if (out_dir / "model.safetensors").exists() and not force:
            raise UsageError(f"{out_dir} already holds a model; use --force to overwrite it")
        convert_reference(reference_dir, out_dir)
        if not (out_dir / "tokenizer.model").is_file():
            warn(f"{reference_dir} has no tokenizer.model; copy one into {out_dir} before using the model")
        typer.echo(str(out_dir))


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
            table.add_row(entry.key[:12], "?", "?", "", "unreadable", byte_size(entry.size_bytes))
            continue
        total = int(meta.get("tokens_total") or 0)
        status = "complete" if entry.complete else f"partial {entry.position / max(total, 1):.0%}"
        document = meta.get("title") or Path(str(meta.get("source", "?"))).name
        model = Path(str(meta.get("model_name", ""))).name
        table.add_row(entry.key[:12], document, model, f"{total:,}", status, byte_size(entry.size_bytes))
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
