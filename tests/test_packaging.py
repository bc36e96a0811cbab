"""The wheel holds every subpackage under `megadoc`, the prompt files and the shipped model files."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("megadoc-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_subpackage_under_megadoc(wheel):
    names = set(wheel.namelist())
    sources = sorted((ROOT / "src").rglob("*.py"))
    assert len(sources) > 50
    for source in sources:
        assert source.relative_to(ROOT / "src").as_posix() in names, source
    assert not any("/training/" in name and name.endswith(".jsonl") for name in names)  # logs are not shipped
    for template in ("qa", "summary", "query_summary", "scrolls_qmsum"):
        assert f"megadoc/prompts/{template}.txt" in names
    assert "megadoc/models/mini/tokenizer.model" in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level <= {"megadoc"} | {n for n in top_level if n.endswith(".dist-info")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "megadoc = megadoc.cli:main" in wheel.read(entry_points).decode()


def test_shipped_models_are_found_through_the_package_not_the_source_tree():
    import megadoc
    from megadoc.engine import MODELS_DIR, resolve_model_dir

    assert MODELS_DIR == Path(megadoc.__file__).resolve().parent / "models"
    assert resolve_model_dir("mini") == MODELS_DIR / "mini"
