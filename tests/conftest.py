import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run under triton's interpreter. Triton reads this when it is first
# imported, which other modules can do early (torch.compile, torch.compiler.disable), so it is set
# here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from megadoc.engine import Megalodon, MegalodonConfig, Tokenizer, train_tokenizer  # noqa: E402
from megadoc.kernels import backend  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def sp_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real sentencepiece model (BPE, vocab 500, byte fallback) trained on a public-domain excerpt."""
    out = tmp_path_factory.mktemp("sp") / "tiny"
    return train_tokenizer([DATA / "austen_persuasion_excerpt.txt"], out, 500)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, sp_model_path: Path) -> Path:
    """The `tiny` preset with random weights (seeded), saved with the suite's tokenizer: `--model DIR`."""
    tokenizer = Tokenizer.load(sp_model_path)
    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny").replace(vocab_size=tokenizer.vocab_size))
    directory = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(directory, sp_model_path)
    return directory


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state cache and an empty user models folder; returns the cache directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEGADOC_CACHE_DIR", str(cache))
    monkeypatch.setenv("MEGADOC_MODELS_DIR", str(tmp_path / "user-models"))
    return cache


@pytest.fixture
def reference_kernels() -> Iterator[None]:
    """The kernels' entry points run their references, on CUDA too (where they would run the Triton
    kernels being checked against them)."""
    with backend("reference"):
        yield
