"""Prompt templates (one ``<name>.txt`` per task) and the loader that fills them.

Templates use ``str.format`` slots: ``{document}``, ``{question}``, ``{query}``; a
literal brace in a template is written ``{{`` or ``}}``. Only the template text is
parsed, never the values, so documents full of braces (QMSum's ``{vocalsound}``,
code, LaTeX) are inserted verbatim. The file's final newline is not part of the
template, so a prompt can end right after ``Answer:``.

``split`` exists for streaming: the app feeds ``before`` and the document through
the model first and decodes after ``after``. Our own templates therefore put the
document first and the question last. SCROLLS templates keep SCROLLS' input
(question, blank line, document) as ``before + document`` and then repeat the
question, so that it sits in the model's last attention chunk rather than a whole
book earlier.
"""

from functools import cache
from importlib.resources import files
from string import Formatter

DOCUMENT = "document"


def names() -> list[str]:
    """The names of all templates shipped with the package."""
    return sorted(p.name.removesuffix(".txt") for p in files(__name__).iterdir() if p.name.endswith(".txt"))


def slots(name: str) -> set[str]:
    """The slot names a template needs."""
    return {field for _, field, _, _ in _parsed(name) if field is not None}


def render(name: str, **values: str) -> str:
    """Fill every slot of template ``name``, the document included."""
    before, after = _fill(name, values, split_at=None)
    return before + after


def split(name: str, **values: str) -> tuple[str, str]:
    """Fill every slot but ``{document}``; return (text before it, text after it)."""
    if [field for _, field, _, _ in _parsed(name)].count(DOCUMENT) != 1:
        raise ValueError(f"template {name!r} must hold {{{DOCUMENT}}} exactly once to be split")
    if DOCUMENT in values:
        raise ValueError("split() takes no document: it returns the text around it")
    return _fill(name, values, split_at=DOCUMENT)


def _fill(name: str, values: dict[str, str], split_at: str | None) -> tuple[str, str]:
    needed = slots(name) - ({split_at} if split_at else set())
    missing, unknown = needed - values.keys(), values.keys() - needed
    if missing or unknown:
        problems = [
            f"missing {sorted(missing)}" if missing else "",
            f"unknown {sorted(unknown)}" if unknown else "",
        ]
        raise ValueError(f"template {name!r} takes slots {sorted(needed)}: " + ", ".join(p for p in problems if p))
    parts: list[list[str]] = [[]]
    for literal, field, _, _ in _parsed(name):
        parts[-1].append(literal)
        if field is not None and field == split_at:
            parts.append([])
        elif field is not None:
            parts[-1].append(str(values[field]))
    return "".join(parts[0]), "".join(parts[1]) if len(parts) > 1 else ""


@cache
def _parsed(name: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    if name not in names():
        raise ValueError(f"no prompt template {name!r}; templates: {', '.join(names())}")
    text = (files(__name__) / f"{name}.txt").read_text(encoding="utf-8").removesuffix("\n")
    parsed = tuple(Formatter().parse(text))
    for _, field, spec, conversion in parsed:
        if field is not None and (not field.isidentifier() or spec or conversion):
            raise ValueError(f"template {name!r}: slot {{{field}}} must be a bare name")
    return parsed
