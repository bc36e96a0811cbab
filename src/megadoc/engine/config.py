"""Model configuration: the reference's ModelConf fields, our presets, and JSON round-trip."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MegalodonConfig:
    num_layers: int
    model_dim: int
    z_dim: int
    value_dim: int
    num_heads: int
    ffn_hidden_dim: int
    vocab_size: int
    cema_ndim: int = 16
    chunk_size: int = 2048
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    swiglu: bool = True
    rescale_nffn: bool = False
    scale_emb: bool = False
    share_emb: bool = False
    norm_affine: bool = True
    output_size: int = -1
    # How `read` / `score` treat the timestep-norm statistics of long inputs. None: plain cumulative
    # statistics. An int k: the authors' reading procedure. Input goes two chunks per call
    # (`norm_refresh_stride`); once a call ends at chunk k or later with more input to come, every
    # timestep norm's statistics are replaced by those of a fresh pass over the last
    # `norm_refresh_window` chunks (reference checkpoints: k = 8, window 6).
    norm_refresh_after: int | None = None
    norm_refresh_window: int = 6
    norm_refresh_stride: int = 2
    # Training only (a model in eval mode never drops), the reference's names and places: `dropout`
    # on the embeddings and on each half-layer's output before its residual, `hidden_dropout` on
    # the CEMA's normalized output, the gated attention and the FFN's hidden units. The reference's
    # attention_dropout (on attention weights) is not implemented: our attention kernels have none.
    dropout: float = 0.0
    hidden_dropout: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.z_dim % self.num_heads == 0, "z_dim must divide by num_heads"),
            (self.value_dim % self.num_heads == 0, "value_dim must divide by num_heads"),
            ((self.z_dim // self.num_heads) % 2 == 0, "the per-head z dim must be even (rotary pairs)"),
            (self.model_dim % self.norm_num_groups == 0, "model_dim must divide by norm_num_groups"),
            (self.chunk_size > 0 and self.num_layers > 0, "chunk_size and num_layers must be positive"),
            (0 <= self.dropout < 1 and 0 <= self.hidden_dropout < 1, "dropouts must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid MegalodonConfig: {message}")

    @property
    def head_z_dim(self) -> int:
        return self.z_dim // self.num_heads

    @property
    def head_value_dim(self) -> int:
        return self.value_dim // self.num_heads

    @property
    def logits_dim(self) -> int:
        return self.vocab_size if self.output_size == -1 else self.output_size

    def replace(self, **changes: Any) -> MegalodonConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MegalodonConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MegalodonConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MegalodonConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable model config ({error})") from None
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> MegalodonConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None

    @classmethod
    def from_reference(cls, model_conf: dict[str, Any], vocab_size: int | None = None) -> MegalodonConfig:
        """Our config from the reference release's `config.json["model"]` (its ModelConf fields).

        Reference checkpoints were evaluated with the norm-statistic refresh, so the converted
        config turns it on."""
        vocab = model_conf["vocab_size"]
        if vocab == -1:
            if vocab_size is None:
                raise ValueError("config.json has vocab_size -1 and no tokenizer gives the size")
            vocab = vocab_size
        rope_base = model_conf.get("rope_base")
        return cls(
            num_layers=model_conf["num_layers"],
            model_dim=model_conf["model_dim"],
            z_dim=model_conf["z_dim"],
            value_dim=model_conf["value_dim"],
            num_heads=model_conf["num_heads"],
            ffn_hidden_dim=model_conf["ffn_hidden_dim"],
            vocab_size=vocab,
            cema_ndim=model_conf.get("cema_ndim", 16),
            chunk_size=model_conf["chunk_size"],
            norm_num_groups=model_conf["norm_num_groups"],
            norm_eps=model_conf.get("norm_eps", 1e-5),
            rope_base=10000.0 if rope_base is None else float(rope_base),
            swiglu=model_conf.get("swiglu", False),
            rescale_nffn=model_conf.get("rescale_nffn", False),
            scale_emb=model_conf.get("scale_emb", False),
            share_emb=model_conf.get("share_emb", False),
            norm_affine=model_conf.get("norm_affine", True),
            output_size=model_conf.get("output_size", -1),
            norm_refresh_after=8,
        )


PRESETS: dict[str, MegalodonConfig] = {
    # The paper's 7B: mega7.3B's shape with a 4096-token attention chunk and RoPE base 100,000.
    "7b": MegalodonConfig(
        num_layers=32,
        model_dim=4096,
        z_dim=1024,
        value_dim=8192,
        num_heads=4,
        ffn_hidden_dim=8192,
        vocab_size=32000,
        cema_ndim=16,
        chunk_size=4096,
        norm_num_groups=64,
        rope_base=100000.0,
        swiglu=True,
    ),
    # The embedded default, trained by megadoc.training.loop (see megadoc/models/mini/MODEL_CARD.md).
    "mini": MegalodonConfig(
        num_layers=6,
        model_dim=384,
        z_dim=128,
        value_dim=768,
        num_heads=2,
        ffn_hidden_dim=1024,
        vocab_size=12288,
        cema_ndim=16,
        chunk_size=1024,
        norm_num_groups=32,
        swiglu=True,
        share_emb=True,
    ),
    # For tests: every code path, small enough for CPU CI.
    "tiny": MegalodonConfig(
        num_layers=2,
        model_dim=32,
        z_dim=16,
        value_dim=64,
        num_heads=2,
        ffn_hidden_dim=48,
        vocab_size=512,
        cema_ndim=4,
        chunk_size=16,
        norm_num_groups=4,
        swiglu=True,
    ),
}
