from pathlib import Path

import pytest

from megadoc.engine.tokenizer import train_tokenizer

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def sp_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real sentencepiece model (BPE, vocab 500, byte fallback) trained on a public-domain excerpt."""
    out = tmp_path_factory.mktemp("sp") / "tiny"
    return train_tokenizer([DATA / "austen_persuasion_excerpt.txt"], out, 500)
