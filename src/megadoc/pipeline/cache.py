"""The state cache: what reading a document left in the model's memory, kept for the next question.

Layout: one safetensors file per (model, tokenizer, document) under `<root>/states/`, named by a
hash of the model fingerprint, the tokenizer id and the document's content hash; its JSON
metadata repeats the three (checked on load), and says how far the read got (`tokens_total`,
`complete`). A partial file is a checkpoint a later run resumes from. Beside it, `<key>.tokens`
keeps the document's token ids and character spans, so a cached question does not re-tokenize,
and `<key>.recall/` its passages and their BM25 index (JSON and numpy arrays, never pickle), so it
does not rebuild the recall index either.

Concurrency: a process holds an exclusive `flock` on `<key>.lock` while it reads a document and
writes its state, so a second process asking about the same document waits, then finds the state
complete (or a checkpoint, if the first was killed: the kernel drops the lock of a dead process).
Files are written to a temporary name and renamed, so a reader never sees a half-written file.
Where `fcntl` does not exist (Windows) there is no lock: both processes read, and the last rename
wins, with a complete and valid file either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from megadoc.display import one_line
from megadoc.engine import State

if TYPE_CHECKING:
    from megadoc.pipeline.ingest import Document
    from megadoc.pipeline.recall import PassageIndex

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

SUFFIX = ".state"
TOKENS_SUFFIX = ".tokens"
RECALL_SUFFIX = ".recall"
# Metadata fields a cached state must share with the request to be used.
IDENTITY = ("model", "tokenizer", "document")


@dataclass(frozen=True)
class CacheEntry:
    """One cached state, as `megadoc cache ls` shows it (read from the file's header only)."""

    key: str
    path: Path
    size_bytes: int
    position: int
    metadata: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.metadata.get("complete"))


def default_root() -> Path:
    """MEGADOC_CACHE_DIR, else the platform's user cache dir (~/.cache/megadoc on Linux)."""
    return Path(os.environ.get("MEGADOC_CACHE_DIR") or platformdirs.user_cache_dir("megadoc"))


def cache_key(model_fingerprint: str, tokenizer_id: str, content_hash: str) -> str:
    return hashlib.sha256(f"{model_fingerprint}\n{tokenizer_id}\n{content_hash}".encode()).hexdigest()[:32]


class StateCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.states = self.root / "states"

    @property
    def fingerprints_file(self) -> Path:
        """Where model weight hashes are memoized (see megadoc.pipeline.registry.fingerprint)."""
        return self.root / "fingerprints.json"

    def path(self, key: str) -> Path:
        return self.states / f"{key}{SUFFIX}"

    @contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the document's lock; `on_wait()` is called once if another process holds it."""
        self.states.mkdir(parents=True, exist_ok=True)
        with open(self.states / f"{key}.lock", "a+") as handle:
            if fcntl is None:
                yield
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, key: str, identity: dict[str, str], template: State, warn: Callable[[str], None]) -> State | None:
        """The cached state for `key`, on `template`'s device, or None.

        A file that is unreadable, made for another model/tokenizer/document, or shaped unlike
        `template` (a fresh state of the model) is deleted with a warning: the caller reads again."""
        path = self.path(key)
        if not path.exists():
            return None
        device = template.final_norm.mean.device
        try:
            state = State.load(path, device=device)
        except ValueError as error:
            return self._discard(path, f"unreadable ({one_line(error)})", warn)
        wrong = [name for name in IDENTITY if state.metadata.get(name) != identity[name]]
        if wrong:
            return self._discard(path, f"made for another {wrong[0]}", warn)
        problem = _layout_problem(state, template)
        if problem:
            return self._discard(path, problem, warn)
        dtype = template.layers[0].k.dtype
        for layer in state.layers:  # keys/values of a chunk in progress follow the model's dtype
            layer.k, layer.v = layer.k.to(dtype), layer.v.to(dtype)
        return state

    def _discard(self, path: Path, why: str, warn: Callable[[str], None]) -> None:
        warn(f"discarding cached state {path.name}: {why}; reading the document again")
        path.unlink(missing_ok=True)
        return None

    def save(self, key: str, state: State) -> None:
        """Write atomically (State.save writes a temporary file and renames it)."""
        self.states.mkdir(parents=True, exist_ok=True)
        state.save(self.path(key))

    def save_tokens(self, key: str, identity: dict[str, str], ids: list[int], offsets: list[tuple[int, int]]) -> None:
        """The document's token ids and character spans: a cached question then skips tokenizing
        (seconds for a million tokens)."""
        self.states.mkdir(parents=True, exist_ok=True)
        path = self.states / f"{key}{TOKENS_SUFFIX}"
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tensors = {"ids": torch.tensor(ids, dtype=torch.int32), "offsets": torch.tensor(offsets, dtype=torch.int32)}
        save_file(tensors, str(tmp), metadata={"identity": json.dumps(identity, sort_keys=True)})
        tmp.replace(path)

    def load_tokens(
        self, key: str, identity: dict[str, str], text_length: int
    ) -> tuple[list[int], list[tuple[int, int]]] | None:
        """Saved ids and spans for exactly this identity, or None (a bad file is removed: re-tokenize)."""
        path = self.states / f"{key}{TOKENS_SUFFIX}"
        if not path.exists():
            return None
        try:
            with safe_open(str(path), "pt") as handle:
                header = handle.metadata() or {}
            tensors = load_file(str(path))
            ids, offsets = tensors["ids"], tensors["offsets"]
            ok = header.get("identity") == json.dumps(identity, sort_keys=True)
            ok = ok and ids.dim() == 1 and offsets.shape == (ids.shape[0], 2)
            ok = ok and (ids.numel() == 0 or (int(offsets.min()) >= 0 and int(offsets.max()) <= text_length))
        except (OSError, SafetensorError, KeyError, ValueError, RuntimeError):
            ok = False
        if not ok:
            path.unlink(missing_ok=True)
            return None
        return ids.tolist(), [tuple(span) for span in offsets.tolist()]

    def save_passages(self, key: str, identity: dict[str, str], index: PassageIndex) -> None:
        """The document's passage index, written to a temporary folder and renamed into place (a
        concurrent writer's complete copy wins)."""
        self.states.mkdir(parents=True, exist_ok=True)
        path = self.states / f"{key}{RECALL_SUFFIX}"
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        index.save(tmp)
        (tmp / "identity.json").write_text(json.dumps(identity, sort_keys=True))
        try:
            tmp.rename(path)
        except OSError:  # already there
            shutil.rmtree(tmp, ignore_errors=True)

    def load_passages(self, key: str, identity: dict[str, str], document: Document) -> PassageIndex | None:
        """The saved passage index for exactly this identity, or None (a bad one is removed)."""
        from megadoc.pipeline.recall import PassageIndex  # bm25s: imported only where recall is used

        path = self.states / f"{key}{RECALL_SUFFIX}"
        if not path.is_dir():
            return None
        try:
            if (path / "identity.json").read_text() != json.dumps(identity, sort_keys=True):
                raise ValueError("made for another document")
            return PassageIndex.load(path, document)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
            return None

    def entries(self) -> list[CacheEntry]:
        """Every cached state, newest first; files whose header cannot be read are listed as such."""
        found = []
        for path in self.states.glob(f"*{SUFFIX}") if self.states.is_dir() else []:
            position, metadata = _header(path)
            found.append(CacheEntry(path.stem, path, path.stat().st_size, position, metadata))
        return sorted(found, key=lambda e: e.path.stat().st_mtime, reverse=True)

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        (self.states / f"{key}{TOKENS_SUFFIX}").unlink(missing_ok=True)
        shutil.rmtree(self.states / f"{key}{RECALL_SUFFIX}", ignore_errors=True)
        (self.states / f"{key}.lock").unlink(missing_ok=True)

    def clear(self) -> int:
        """Remove every cached state; returns how many."""
        entries = self.entries()
        for entry in entries:
            self.remove(entry.key)
        for pattern in (f"*{TOKENS_SUFFIX}", f"*{RECALL_SUFFIX}", "*.tmp"):
            for stray in self.states.glob(pattern) if self.states.is_dir() else []:
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    stray.unlink(missing_ok=True)
        return len(entries)


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    try:
        with safe_open(str(path), "pt") as handle:
            header = handle.metadata() or {}
        return int(header.get("position", 0)), json.loads(header.get("metadata", "{}"))
    except (OSError, SafetensorError, ValueError):
        return 0, {"unreadable": True}


def _layout_problem(state: State, template: State) -> str | None:
    """Why `state` cannot continue `template`'s model, or None. The current chunk's keys and values
    and the recent ids vary in length (dim 1); everything else must match exactly."""
    ours, theirs = state.tensors(), template.tensors()
    if ours.keys() != theirs.keys():
        return "its tensors differ from the model's state"
    for name, tensor in theirs.items():
        shape, expected = list(ours[name].shape), list(tensor.shape)
        if name.endswith((".attn.k", ".attn.v")) or name == "recent_ids":
            shape[1] = expected[1] = 0
        if shape != expected:
            return f"tensor {name} has shape {tuple(ours[name].shape)}, the model needs {tuple(tensor.shape)}"
    return None
