"""Training: `python -m megadoc.training.loop RECIPE.toml` (or under `torchrun` on N GPUs).

Two stages share one loop. `pretrain` samples long windows (16K tokens and more, so the EMA learns
to carry information across many attention chunks) from token shards. `tune` trains on
(document, question, answer) rows rendered with the app's own prompt templates, loss on the
answer tokens only, mixed with pretraining windows so the model keeps its reading. Runs are
resumable from their own checkpoint directory and stop cleanly at a wall-clock budget;
`python -m megadoc.training.export` then ships a run's checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megadoc.engine import Megalodon
from megadoc.training.batches import IGNORE, RowMix
from megadoc.training.recipe import LOSS_NAMES, Recipe, model_config


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


LOSSES = dict(zip(LOSS_NAMES, (row_mean_loss, token_mean_loss), strict=True))  # by Recipe.loss


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


def is_projection(name: str, param: torch.nn.Parameter) -> bool:
    """The projection and embedding matrices (not the [2, Z] q/k scales and shifts)."""
    return param.dim() == 2 and ("mega.w" in name or "nffn.fc" in name or "embed" in name or "output" in name)


def _optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; weight decay on the projection and embedding matrices only; each group's `lr_scale`
    multiplies the scheduled learning rate (`recipe.attention_scale_lr` for the q/k scales)."""
    decay, scales, keep = [], [], []
    for name, param in model.named_parameters():
        (decay if is_projection(name, param) else scales if name.endswith("mega.gamma") else keep).append(param)
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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        train(Recipe.load(args[0]))
    else:
        raise SystemExit("usage: python -m megadoc.training.loop RECIPE.toml")


if __name__ == "__main__":
    main()
