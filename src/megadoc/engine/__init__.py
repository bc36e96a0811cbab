"""The Megalodon engine: model, streaming state, checkpoints, tokenizer, generation.

Callers outside the engine import from here; the submodules are its inside."""

from megadoc.engine.checkpoint import (
    MODELS_DIR,
    CheckpointError,
    convert_reference,
    default_dtype,
    is_reference_checkpoint,
    load_pretrained,
    resolve_model_dir,
)
from megadoc.engine.config import MegalodonConfig
from megadoc.engine.decode import StaticDecoder
from megadoc.engine.generation import GenerationConfig, continuation_logprobs, generate, stream_text
from megadoc.engine.model import Megalodon
from megadoc.engine.parallel import read_across_ranks
from megadoc.engine.quantize import quantize_weights
from megadoc.engine.state import State
from megadoc.engine.tokenizer import Tokenizer, train_tokenizer

__all__ = [
    "MODELS_DIR",
    "CheckpointError",
    "GenerationConfig",
    "Megalodon",
    "MegalodonConfig",
    "State",
    "StaticDecoder",
    "Tokenizer",
    "continuation_logprobs",
    "convert_reference",
    "default_dtype",
    "generate",
    "is_reference_checkpoint",
    "load_pretrained",
    "quantize_weights",
    "read_across_ranks",
    "resolve_model_dir",
    "stream_text",
    "train_tokenizer",
]
