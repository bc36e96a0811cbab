"""The model registry: which models are installed, where, how big; loading one onto a device.

A model is a directory in our checkpoint format (config.json, model.safetensors, tokenizer.model).
Names resolve in this order: an existing directory; a user model (MEGADOC_MODELS_DIR, else the
platform's user data dir + /models); a model shipped in megadoc/models/ (the engine decides, so an
untrained `mini` says it is not installed yet rather than loading anything else).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch

from megadoc.display import one_line
from megadoc.engine import (
    MODELS_DIR,
    CheckpointError,
    Megalodon,
    MegalodonConfig,
    Tokenizer,
    default_dtype,
    resolve_model_dir,
)

DEFAULT_MODEL = "mini"
DEVICES = ("auto", "cpu", "cuda")
_HASH_BLOCK = 1 << 22


class ModelError(Exception):
    """A model that cannot be found or loaded; str() is one line fit to show a user."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of `megadoc models`."""

    name: str
    path: Path
    origin: str  # "shipped" or "user"
    installed: bool
    size_bytes: int
    parameters: int | None


@dataclass
class LoadedModel:
    """A model on its device with its tokenizer, and the fingerprint that state caches key on."""

    name: str
    directory: Path
    model: Megalodon
    tokenizer: Tokenizer
    fingerprint: str


def user_models_dir() -> Path:
    return Path(os.environ.get("MEGADOC_MODELS_DIR") or Path(platformdirs.user_data_dir("megadoc")) / "models")


def resolve(name_or_dir: str | Path) -> Path:
    """The directory of a model given by path or name (see the module docstring for the order)."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    user = user_models_dir() / str(name_or_dir)
    if os.sep not in str(name_or_dir) and user.is_dir():
        return user
    try:
        return resolve_model_dir(name_or_dir)
    except CheckpointError as error:
        raise ModelError(str(error)) from None


def installed_models() -> list[ModelEntry]:
    """Shipped models (the default listed even before its weights land) and the user's models."""
    entries = []
    names = sorted({DEFAULT_MODEL, *(p.name for p in _subdirs(MODELS_DIR))})
    for name in names:
        entries.append(_entry(name, MODELS_DIR / name, "shipped"))
    for directory in _subdirs(user_models_dir()):
        entries.append(_entry(directory.name, directory, "user"))
    return entries


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _entry(name: str, directory: Path, origin: str) -> ModelEntry:
    weights = directory / "model.safetensors"
    installed = weights.is_file() and (directory / "config.json").is_file()
    size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file()) if directory.is_dir() else 0
    return ModelEntry(name, directory, origin, installed, size, _parameter_count(directory) if installed else None)


def _parameter_count(directory: Path) -> int | None:
    """Parameters from the config alone (a model built on the meta device holds no memory)."""
    try:
        config = MegalodonConfig.load(directory / "config.json")
    except ValueError:
        return None
    with torch.device("meta"):
        return Megalodon(config).num_parameters()


def choose_device(choice: str) -> torch.device:
    """auto: CUDA when there is a GPU, else CPU. Asking for CUDA without one is an error."""
    if choice not in DEVICES:
        raise ModelError(f"unknown device {choice!r}; choose one of {', '.join(DEVICES)}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def load(name_or_dir: str | Path, device: torch.device, fingerprints: Path | None = None) -> LoadedModel:
    """Load a model and its tokenizer. `fingerprints` is a JSON file memoizing weight hashes."""
    directory = resolve(name_or_dir)
    tokenizer_path = directory / "tokenizer.model"
    if not tokenizer_path.is_file():
        raise ModelError(f"{directory}: no tokenizer.model beside the weights")
    try:
        tokenizer = Tokenizer.load(tokenizer_path)
        model = Megalodon.from_pretrained(directory, device=device, dtype=default_dtype(device))
    except (CheckpointError, ValueError) as error:
        raise ModelError(one_line(error)) from None
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ModelError(
            f"{directory}: tokenizer.model has {tokenizer.vocab_size} pieces, the model only {model.config.vocab_size}"
        )
    return LoadedModel(str(name_or_dir), directory, model, tokenizer, fingerprint(directory, fingerprints))


def fingerprint(directory: Path, memo: Path | None = None) -> str:
    """sha256 of config.json and model.safetensors (first 32 hex digits).

    Hashing a 14 GB checkpoint takes a while, so hashes are memoized by path, size and mtime."""
    weights = (directory / "model.safetensors").resolve()
    stat = weights.stat()
    stamp = f"{weights}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_memo(memo)
    if stamp in known:
        weights_hash = known[stamp]
    else:
        digest = hashlib.sha256()
        with weights.open("rb") as file:
            while block := file.read(_HASH_BLOCK):
                digest.update(block)
        weights_hash = digest.hexdigest()
        if memo is not None:
            _write_memo(memo, {**known, stamp: weights_hash})
    config_hash = hashlib.sha256((directory / "config.json").read_bytes()).hexdigest()
    return hashlib.sha256(f"{config_hash}\n{weights_hash}".encode()).hexdigest()[:32]


def _read_memo(memo: Path | None) -> dict[str, str]:
    if memo is None or not memo.is_file():
        return {}
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(memo: Path, data: dict[str, str]) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(memo)
