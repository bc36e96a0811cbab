"""Dependencies go one way: cli/tui -> evals/training -> pipeline -> engine -> kernels.

Every import statement of every module under src/megadoc is parsed (function-level imports too),
so a lazy import cannot hide a wrong arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import megadoc

PACKAGE = Path(megadoc.__file__).resolve().parent

# What each top-level part of the package may import, besides itself. `display` and `prompts` are
# leaves every part may use; `models` holds data only.
ALLOWED = {
    "display": set(),
    "prompts": set(),
    "kernels": {"display"},
    "engine": {"kernels", "display"},
    "pipeline": {"engine", "kernels", "prompts", "display"},
    "evals": {"pipeline", "engine", "kernels", "prompts", "display"},
    "training": {"pipeline", "engine", "kernels", "prompts", "display"},
    "tui": {"pipeline", "engine", "prompts", "display"},
    "cli": {"tui", "evals", "training", "pipeline", "engine", "kernels", "prompts", "display"},
}


def part_of(module: str) -> str | None:
    """`megadoc.pipeline.ingest.pdf` -> `pipeline`; None for what is not megadoc's."""
    names = module.split(".")
    if names[0] != "megadoc":
        return None
    return names[1] if len(names) > 1 else ""


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each `import megadoc...` and `from megadoc... import x` (x a submodule or a name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "megadoc":
                found += [(node.lineno, f"megadoc.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "__init__.py")


def test_every_part_is_known():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in source_files()}
    assert parts == set(ALLOWED), parts ^ set(ALLOWED)


def test_imports_go_one_way():
    wrong = []
    for path in source_files():
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for line, module in imported_modules(path):
            target = part_of(module)
            if target is None or target == own:
                continue
            if target not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {module}")
    assert wrong == []


def test_the_checker_sees_lazy_imports(tmp_path):
    """A function-level import of the app from the engine is caught, as the top-level ones are."""
    module = tmp_path / "model.py"
    module.write_text("def load():\n    from megadoc.pipeline import registry\n    return registry\n")
    assert [part_of(m) for _, m in imported_modules(module)] == ["pipeline"]
    assert "pipeline" not in ALLOWED["engine"]


def test_callers_use_the_engine_surface():
    """Outside the engine (the package's other parts, benchmarks, experiments), engine names come from
    `megadoc.engine`, never from its submodules. The engine's own white-box tests (tests/engine) are
    its inside and may reach in."""
    root = PACKAGE.parents[1]
    callers = [p for p in source_files() if p.relative_to(PACKAGE).parts[0] != "engine"]
    callers += sorted((root / "benchmarks").rglob("*.py")) + sorted((root / "experiments").rglob("*.py"))
    wrong = [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in callers
        for line, module in imported_modules(path)
        if module.startswith("megadoc.engine.")
    ]
    assert callers and wrong == []
