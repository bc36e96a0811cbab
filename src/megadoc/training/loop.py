"""Training: `python -m megadoc.training.loop RECIPE.toml` (or under `torchrun` on N GPUs).

Two stages share one loop. `pretrain` samples long windows (16K tokens and more, so the EMA learns
to carry information across many attention chunks) from token shards. `tune` trains on
(document, question, answer) rows rendered with the app's own prompt templates, loss on the
answer tokens only, mixed with pretraining windows so the model keeps its reading. Runs are
resumable from their own checkpoint directory and stop cleanly at a wall-clock budget.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megadoc.engine import Megalodon, MegalodonConfig

IGNORE = -100


@dataclass
class Recipe:
    out_dir: str
    tokens: str  # pretraining token shards: a directory of uint16 .npy files
    model: dict = field(default_factory=lambda: {"preset": "mini"})
    tune: str | list[str] | None = None  # tuning rows (.npz files from megadoc.training.rows); None: pretraining
    tune_fraction: float = 0.5  # share of rows drawn from `tune` in the tuning stage
    repeat_fraction: float = 0.0  # share of rows that are repeat windows (RepeatWindows): copying practice
    # "row_mean": every row weighs the same (row_mean_loss); "token_mean": every scored token does,
    # so a tuning row's few answer tokens weigh little beside a pretraining window (rounds 1-3).
    loss: str = "row_mean"
    init_from: str | None = None  # a model directory to start from (e.g. the pretrained model)
    seq_len: int = 16384
    batch_size: int = 4  # rows per GPU per step
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    # Multiplies the learning rate of the attention's q/k scales (`mega.gamma`). They start at 1 with
    # 1/sqrt(zh) folded in (megalodon-spec "Block" 4), which keeps attention logits within about +-1:
    # a model trained briefly never sharpens its attention enough to copy a name from its context.
    attention_scale_lr: float = 1.0
    # Multiplies every q/k scale (gamma + 1) of an `init_from` model when the run starts: attention
    # logits grow by its square, so a model whose attention never sharpened can start sharp.
    attention_scale_start: float = 1.0
    # A model trained from scratch: its q scales (gamma + 1) start at this value and its k scales at
    # plus or minus it, a random sign per dimension (0: the spec's init, all 1). q and k are one
    # projection z with per-dimension scales, so scores are z_i . (s_q s_k z_j): with products all
    # positive a head can only match like with like, and copying ("attend to the token after an
    # earlier copy of mine") needs products of both signs, which training rarely reaches from all 1.
    signed_attention_scales: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    max_minutes: float | None = None  # stop (and save) after this much wall time

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        data = tomllib.loads(Path(path).read_text())
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")


def model_config(recipe: Recipe) -> MegalodonConfig:
    spec = dict(recipe.model)
    base = MegalodonConfig.preset(spec.pop("preset", "mini"))
    return base.replace(**spec)


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


def row_mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each row's scored tokens, then over the rows that score any.

    Every row weighs the same: a tuning row's answer of a few tokens counts as much as a
    pretraining window of thousands (a mean over all tokens would drown the answers). Rows that
    score all their tokens alike (pretraining) give the plain token mean."""
    # Per-token losses in the logits' dtype (as the token mean had them), summed in float32: a float32
    # copy of bf16 logits would be [rows x length x vocab], 6.4 GB at 8 x 16K for `mini`.
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none").float()
    scored = (targets != IGNORE).to(losses.dtype)
    counts = scored.sum(1)
    per_row = (losses.view_as(scored) * scored).sum(1) / counts.clamp(min=1)
    return per_row[counts > 0].mean()


def token_mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over all scored tokens of the batch (`Recipe.loss = "token_mean"`)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


LOSSES = {"row_mean": row_mean_loss, "token_mean": token_mean_loss}


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


def learning_rate(recipe: Recipe, step: int, minutes: float = 0.0) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` over whichever budget ends first:
    the step count or the wall-clock minutes."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = min(1.0, (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps))
    if recipe.max_minutes:
        progress = max(progress, min(1.0, minutes / recipe.max_minutes))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * cosine)


def _is_projection(name: str, param: torch.nn.Parameter) -> bool:
    """The projection and embedding matrices (not the [2, Z] q/k scales and shifts)."""
    return param.dim() == 2 and ("mega.w" in name or "nffn.fc" in name or "embed" in name or "output" in name)


def _optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; weight decay on the projection and embedding matrices only; each group's `lr_scale`
    multiplies the scheduled learning rate (`recipe.attention_scale_lr` for the q/k scales)."""
    decay, scales, keep = [], [], []
    for name, param in model.named_parameters():
        (decay if _is_projection(name, param) else scales if name.endswith("mega.gamma") else keep).append(param)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay, "lr_scale": 1.0},
        {"params": scales, "weight_decay": 0.0, "lr_scale": recipe.attention_scale_lr},
        {"params": keep, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas, fused=torch.cuda.is_available())


def sign_attention_scales(model: Megalodon, scale: float, generator: torch.Generator) -> None:
    """Set every layer's q scales to `scale` and its k scales to +-`scale`, a random sign each
    (`Recipe.signed_attention_scales`)."""
    with torch.no_grad():
        for layer in model.layers:
            gamma = layer.mega.gamma
            signs = torch.randint(0, 2, gamma.shape[1:], generator=generator).to(gamma) * 2 - 1
            gamma[0].fill_(scale - 1)
            gamma[1].copy_(signs * scale - 1)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs: the loop then saves its checkpoint
    and returns, so a run stopped from outside (`timeout`, Ctrl-C) loses nothing and resumes where
    it stopped. The previous handlers come back after the block."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _save(out: Path, model: Megalodon, optimizer, step: int, tokens: int, minutes: float, rng_state: str) -> None:
    checkpoint = out / "checkpoint"
    model.save_pretrained(checkpoint)
    torch.save(
        {"optimizer": optimizer.state_dict(), "step": step, "tokens": tokens, "minutes": minutes, "rng": rng_state},
        checkpoint / "trainer.pt.tmp",
    )
    (checkpoint / "trainer.pt.tmp").replace(checkpoint / "trainer.pt")


def _starting_model(recipe: Recipe) -> Megalodon:
    """A run's model before its first step: `init_from` (its q/k scales times `attention_scale_start`)
    or a fresh one (its q/k scales signed when `signed_attention_scales` asks)."""
    if recipe.init_from:
        model = Megalodon.from_pretrained(recipe.init_from, dtype=torch.float32)
        with torch.no_grad():
            for layer in model.layers:
                layer.mega.gamma.copy_((layer.mega.gamma + 1) * recipe.attention_scale_start - 1)
        return model
    model = Megalodon(model_config(recipe))
    if recipe.signed_attention_scales:
        sign_attention_scales(model, recipe.signed_attention_scales, torch.Generator().manual_seed(recipe.seed))
    return model


def train(recipe: Recipe) -> Path:
    distributed = "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    out = Path(recipe.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))

    torch.manual_seed(recipe.seed)
    checkpoint = out / "checkpoint"
    resume = (checkpoint / "trainer.pt").is_file()
    model = Megalodon.from_pretrained(checkpoint, dtype=torch.float32) if resume else _starting_model(recipe)
    model = model.to(device).train()
    optimizer = _optimizer(model, recipe)
    step, tokens_seen, minutes_before = 0, 0, 0.0
    rng = np.random.default_rng(recipe.seed * 1000 + rank)
    if resume:
        saved = torch.load(checkpoint / "trainer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        step, tokens_seen, minutes_before = saved["step"], saved["tokens"], saved["minutes"]
        rng.bit_generator.state = json.loads(saved["rng"])

    rows = RowMix(recipe, rng, model.config.chunk_size)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    log = (out / "log.jsonl").open("a") if rank == 0 else None
    started = time.time()

    def minutes() -> float:
        return minutes_before + (time.time() - started) / 60

    window_start, window_tokens = time.time(), 0
    with _stop_on_signals() as stop_requested:
        while step < recipe.steps:
            inputs, targets = (torch.from_numpy(a).to(device, non_blocking=True) for a in rows.batch(recipe.batch_size))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step, minutes()) * group["lr_scale"]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = wrapped(inputs)
            loss = LOSSES[recipe.loss](logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            step += 1
            batch_tokens = inputs.numel() * world
            tokens_seen += batch_tokens
            window_tokens += batch_tokens

            if step % recipe.log_every == 0 and log is not None:
                elapsed = time.time() - window_start
                record = {
                    "step": step,
                    "loss": round(loss.item(), 4),
                    "grad_norm": round(grad_norm.item(), 3),
                    "lr": learning_rate(recipe, step, minutes()),
                    "tokens": tokens_seen,
                    "tokens_per_s": round(window_tokens / elapsed),
                    "minutes": round(minutes(), 2),
                }
                print(json.dumps(record), flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()
                window_start, window_tokens = time.time(), 0
            stopping = (recipe.max_minutes is not None and minutes() > recipe.max_minutes) or stop_requested.is_set()
            if distributed:
                flag = torch.tensor(int(stopping), device=device)
                dist.all_reduce(flag)
                stopping = bool(flag.item())
            if rank == 0 and (step % recipe.save_every == 0 or step == recipe.steps or stopping):
                _save(out, model, optimizer, step, tokens_seen, minutes(), json.dumps(rng.bit_generator.state))
            if stopping:
                break
    if distributed:
        dist.destroy_process_group()
    return checkpoint


def export(checkpoint: str | Path, out: str | Path, tokenizer: str | Path) -> None:
    """Ship a trained model: projection and embedding matrices in bf16, the rest (CEMA, norms, q/k
    scales) in float32, with its tokenizer. Loading casts everything to the runtime dtype."""
    model = Megalodon.from_pretrained(checkpoint, dtype=torch.float32)
    for name, param in model.named_parameters():
        if _is_projection(name, param):
            param.data = param.data.to(torch.bfloat16)
    model.save_pretrained(out, tokenizer)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 4 and args[0] == "export":
        export(*args[1:])
    elif len(args) == 1:
        train(Recipe.load(args[0]))
    else:
        raise SystemExit(
            "usage: python -m megadoc.training.loop RECIPE.toml\n"
            "       python -m megadoc.training.loop export CHECKPOINT_DIR OUT_DIR TOKENIZER"
        )


if __name__ == "__main__":
    main()
