"""A training run's recipe, read from a TOML file (recipes/): the model, its data, its schedule.

Its own module because the batch sources read it as well as the loop."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from megadoc.engine import MegalodonConfig

# What `Recipe.loss` may name: the keys of the loop's LOSSES, here so that a recipe is checked
# when it is loaded without importing the loop.
LOSS_NAMES = ("row_mean", "token_mean")


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
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {', '.join(LOSS_NAMES)}, not {self.loss!r}")


def model_config(recipe: Recipe) -> MegalodonConfig:
    spec = dict(recipe.model)
    base = MegalodonConfig.preset(spec.pop("preset", "mini"))
    return base.replace(**spec)
