"""The rows a training batch is made of: pretraining windows, tuning rows, repeat windows, and
the mix of the three that a recipe asks for.

Each source gives (inputs, targets) of `seq_len` tokens; targets are IGNORE where no loss falls.
They draw from one numpy generator, the loop's, whose state a checkpoint saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megadoc.training.recipe import Recipe

IGNORE = -100  # a target that scores nothing (cross-entropy's ignore_index)


class PretrainWindows:
    """Random windows of `seq_len + 1` tokens from token shards (documents separated by EOS).

    Shards that appear in the directory while training runs join the draw (checked every
    REFRESH_EVERY windows): on the GPU machine the books arrive in parts, one device call each,
    and the run need not wait for the last. A shard is written under another name and renamed
    to *.npy when whole."""

    REFRESH_EVERY = 64

    def __init__(self, directory: str | Path, seq_len: int, rng: np.random.Generator) -> None:
        self.directory, self.seq_len, self.rng = Path(directory), seq_len, rng
        self.paths: list[Path] = []
        self.refresh()
        if not self.shards:
            raise ValueError(f"{directory}: no token shard longer than {seq_len + 1} tokens")

    def refresh(self) -> None:
        """Load the shards of the directory, if there are new ones."""
        self.drawn = 0
        paths = sorted(self.directory.glob("*.npy"))
        if paths == self.paths or (self.paths and not paths):  # a folder gone mid-run keeps what was drawn
            return
        self.paths = paths
        shards = [np.load(p, mmap_mode="r") for p in paths]
        self.shards = [s for s in shards if len(s) > self.seq_len + 1]
        sizes = np.array([len(s) - self.seq_len - 1 for s in self.shards], dtype=np.float64)
        self.weights = sizes / sizes.sum() if len(sizes) else sizes

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        self.drawn += 1
        if self.drawn >= self.REFRESH_EVERY:
            self.refresh()
        shard = self.shards[self.rng.choice(len(self.shards), p=self.weights)]
        start = int(self.rng.integers(0, len(shard) - self.seq_len - 1))
        window = np.asarray(shard[start : start + self.seq_len + 1], dtype=np.int64)
        return window[:-1], window[1:]


class TuneRows:
    """Rows of (ids, answer mask) from an .npz written by megadoc.training.rows: the loss
    falls on answer tokens only. A row longer than seq_len loses whole attention chunks from its
    start, so that every token keeps its position in its chunk: the final prompt starts a chunk,
    with the recalled evidence and the question in one attention window, as when the app answers."""

    def __init__(
        self, paths: str | Path | list, seq_len: int, pad_id: int, rng: np.random.Generator, chunk_size: int
    ) -> None:
        ids, offsets, answer_starts, base = [], [np.zeros(1, dtype=np.int64)], [], 0
        for path in [paths] if isinstance(paths, str | Path) else paths:
            data = np.load(path)
            ids.append(data["ids"])
            offsets.append(data["offsets"][1:].astype(np.int64) + base)
            answer_starts.append(data["answer_starts"].astype(np.int64) + base)
            base += int(data["offsets"][-1])
        self.ids, self.offsets = np.concatenate(ids), np.concatenate(offsets)
        self.answer_starts = np.concatenate(answer_starts)
        self.seq_len, self.pad_id, self.rng, self.chunk_size = seq_len, pad_id, rng, chunk_size

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        row = int(self.rng.integers(0, len(self.offsets) - 1))
        start, end, answer = self.offsets[row], self.offsets[row + 1], self.answer_starts[row]
        excess = (end - start) - (self.seq_len + 1)
        if excess > 0:
            start += -(-excess // self.chunk_size) * self.chunk_size
        ids = np.asarray(self.ids[start:end], dtype=np.int64)
        inputs, targets = ids[:-1].copy(), ids[1:].copy()
        targets[: max(answer - start - 1, 0)] = IGNORE
        pad = self.seq_len - len(inputs)
        if pad > 0:
            inputs = np.concatenate([inputs, np.full(pad, self.pad_id)])
            targets = np.concatenate([targets, np.full(pad, IGNORE)])
        return inputs, targets


class RepeatWindows:
    """Pretraining windows in which every attention chunk holds a span twice: early in the chunk,
    then at its end, scored on the second copy only. Practice in copying what attention holds, the
    skill that answering from recalled passages rests on. The span is the chunk's own tokens drawn
    in random order: a repeat of book text can be predicted from memory of the book (a model
    trained on a few epochs of it does) and teaches no copying, and random ids over the whole
    vocabulary are mostly rare pieces whose embeddings pretraining barely trained."""

    def __init__(self, windows: PretrainWindows, chunk_size: int, rng: np.random.Generator) -> None:
        if windows.seq_len % chunk_size or chunk_size < 64:
            raise ValueError(f"repeat windows need whole chunks of 64 tokens or more ({windows.seq_len}, {chunk_size})")
        self.windows, self.chunk_size, self.rng = windows, chunk_size, rng

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        inputs, _ = self.windows.sample()
        inputs, targets = inputs.copy(), np.full_like(inputs, IGNORE)
        chunk = self.chunk_size
        for begin in range(0, len(inputs), chunk):
            length = int(self.rng.integers(16, chunk // 4 + 1))
            source = begin + int(self.rng.integers(0, chunk // 2 - length + 1))
            repeat = begin + chunk - length
            span = self.rng.choice(inputs[begin : begin + chunk], length)
            inputs[source : source + length] = inputs[repeat : begin + chunk] = span
            # Targets at repeat-1 .. end-2 are the repeated ids: each predicted from the copy so far.
            targets[repeat - 1 : begin + chunk - 1] = inputs[repeat : begin + chunk]
        return inputs, targets


class RowMix:
    """The rows of a batch, each drawn from the tuning rows, the repeat windows or the pretraining
    windows by the recipe's shares (`tune_fraction`, then `repeat_fraction`, the rest pretraining)."""

    def __init__(self, recipe: Recipe, rng: np.random.Generator, chunk_size: int, pad_id: int = 0) -> None:
        self.windows = PretrainWindows(recipe.tokens, recipe.seq_len, rng)
        self.tune = TuneRows(recipe.tune, recipe.seq_len, pad_id, rng, chunk_size) if recipe.tune else None
        self.repeats = RepeatWindows(self.windows, chunk_size, rng) if recipe.repeat_fraction else None
        self.tune_fraction = recipe.tune_fraction if self.tune is not None else 0.0
        self.repeat_fraction = recipe.repeat_fraction
        self.rng = rng

    def _source(self) -> PretrainWindows | TuneRows | RepeatWindows:
        draw = self.rng.random()
        if draw < self.tune_fraction:
            return self.tune
        if self.repeats is not None and draw < self.tune_fraction + self.repeat_fraction:
            return self.repeats
        return self.windows

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each [size, seq_len]."""
        rows = [self._source().sample() for _ in range(size)]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
