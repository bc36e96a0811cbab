"""The `megadoc` command line: ask, read, find, summarize, models, cache, convert, eval.

stdout carries only what was asked for (answers, summaries, tables, JSON); progress, warnings and
errors go to stderr. Bad input ends with one line, `error: ...`, and exit status 1; Ctrl-C during
a read saves what was read and exits with 130.
"""

# Each module registers its commands; `megadoc --help` lists them in this order.
# isort: off
from megadoc.cli import ask, find, summarize, admin, evaluate  # noqa: F401

# isort: on
from megadoc.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
