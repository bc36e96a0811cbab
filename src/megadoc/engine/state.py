"""The streaming state: everything the model remembers of what it has read.

Per layer: the timestep norm's running statistics, the complex EMA hidden state and the current
chunk's keys and values; plus the final norm's statistics and the position. At a chunk boundary the
keys and values are empty, so a document's state there does not grow with the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from megadoc.kernels.timestep_norm import NormStats

FORMAT_VERSION = 1


@dataclass
class LayerState:
    norm: NormStats
    cema_h: torch.Tensor  # [B, D, N] complex64
    k: torch.Tensor  # [B, n, heads, z/heads], n < chunk_size: keys of the current chunk (after rotary)
    v: torch.Tensor  # [B, n, heads, value/heads]


@dataclass
class State:
    layers: list[LayerState]
    final_norm: NormStats
    position: int = 0
    # The last few chunks' ids, kept only when the model reads with the norm-statistic refresh.
    recent_ids: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.final_norm.count.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat, named tensors (the authors' golden files use the same names)."""
        out: dict[str, torch.Tensor] = {}
        for name, stats in self._norms():
            out[f"{name}.count"] = stats.count
            out[f"{name}.mean"] = stats.mean
            out[f"{name}.var"] = stats.var
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.cema.h"] = torch.view_as_real(layer.cema_h)
            out[f"layers.{i}.attn.k"] = layer.k
            out[f"layers.{i}.attn.v"] = layer.v
        if self.recent_ids is not None:
            out["recent_ids"] = self.recent_ids
        return out

    def _norms(self) -> list[tuple[str, NormStats]]:
        named = [(f"layers.{i}.norm", layer.norm) for i, layer in enumerate(self.layers)]
        return [*named, ("final_norm", self.final_norm)]

    def map(self, fn) -> State:
        """A new State with `fn` applied to every tensor."""

        def norm(s: NormStats) -> NormStats:
            return NormStats(fn(s.count), fn(s.mean), fn(s.var))

        layers = [LayerState(norm(ly.norm), fn(ly.cema_h), fn(ly.k), fn(ly.v)) for ly in self.layers]
        recent = None if self.recent_ids is None else fn(self.recent_ids)
        return replace(
            self,
            layers=layers,
            final_norm=norm(self.final_norm),
            recent_ids=recent,
            metadata=dict(self.metadata),
        )

    def clone(self) -> State:
        return self.map(torch.clone)

    def to(self, device: torch.device | str) -> State:
        return self.map(lambda t: t.to(device))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def save(self, path: str | Path) -> None:
        """Safetensors with JSON metadata, written to a temporary file and renamed into place."""
        path = Path(path)
        header = {
            "format": f"megadoc-state/{FORMAT_VERSION}",
            "position": str(self.position),
            "num_layers": str(len(self.layers)),
            "metadata": json.dumps(self.metadata),
        }
        tmp = path.with_name(path.name + ".tmp")
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.tensors().items()}
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> State:
        """Load a saved state; a corrupt, truncated or foreign file raises ValueError (one line)."""
        try:
            tensors = load_file(str(path), device=str(device))
            with safe_open(str(path), "pt") as handle:
                header = handle.metadata() or {}
            if header.get("format") != f"megadoc-state/{FORMAT_VERSION}":
                raise ValueError("not a megadoc state file")
            num_layers = int(header["num_layers"])

            def norm(name: str) -> NormStats:
                return NormStats(tensors[f"{name}.count"], tensors[f"{name}.mean"], tensors[f"{name}.var"])

            layers = [
                LayerState(
                    norm=norm(f"layers.{i}.norm"),
                    cema_h=torch.view_as_complex(tensors[f"layers.{i}.cema.h"].contiguous()),
                    k=tensors[f"layers.{i}.attn.k"],
                    v=tensors[f"layers.{i}.attn.v"],
                )
                for i in range(num_layers)
            ]
            return cls(
                layers=layers,
                final_norm=norm("final_norm"),
                position=int(header["position"]),
                recent_ids=tensors.get("recent_ids"),
                metadata=json.loads(header["metadata"]),
            )
        except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as error:
            raise ValueError(f"{path}: unreadable state file ({error})") from None
