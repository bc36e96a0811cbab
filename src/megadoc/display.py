"""How megadoc shows things to people: an error as one line, a size in bytes.

A leaf module: every layer may import it, and it imports nothing of megadoc."""

from __future__ import annotations


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), at most `limit` long."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def byte_size(count: float) -> str:
    """`812 B`, `4.2 KiB`, `31.0 MiB`, `1.3 GiB`."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} GiB"
