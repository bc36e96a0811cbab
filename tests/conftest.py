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
from tests.helpers import DATA, LLAMA_WINDOW, SAILOR_STORY  # noqa: E402


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


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a BPE tokenizer trained here: no download."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers", reason="HFPredictor needs the hf extra (transformers)")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([SAILOR_STORY * 3, "Question: Answer: Who sent the letter?"], trainer)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=LLAMA_WINDOW,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
