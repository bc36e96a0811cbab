import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run under triton's interpreter. Triton reads this when it is first
# imported, which other modules can do early (torch.compile, torch.compiler.disable), so it is set
# here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from megadoc.engine.tokenizer import train_tokenizer  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def sp_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real sentencepiece model (BPE, vocab 500, byte fallback) trained on a public-domain excerpt."""
    out = tmp_path_factory.mktemp("sp") / "tiny"
    return train_tokenizer([DATA / "austen_persuasion_excerpt.txt"], out, 500)
