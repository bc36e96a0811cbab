"""The Megalodon engine: model, streaming state, checkpoints, tokenizer, generation."""

from megadoc.engine.config import MegalodonConfig
from megadoc.engine.model import Megalodon
from megadoc.engine.state import State

__all__ = ["Megalodon", "MegalodonConfig", "State"]
