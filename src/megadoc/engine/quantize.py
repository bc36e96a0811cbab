"""Int8 weight-only storage of a loaded model, for decoding.

At batch 1 a decoding step is little else than one read of every weight (benchmarks/KERNELS-NOTES.md):
storing the linears that go through `fused_linear` as int8 with a float32 scale per output row
(`quantize_per_channel`) halves those bytes, and the fused linear kernel applies the scales after
its sums. The embedding, the norms, the CEMA, the biases and an output head tied to the embedding
keep their dtype.

For inference only: the int8 weights take no gradient, and calls of more than 16 rows (reading a
document) dequantize them per call. Quantize after moving the model to its device and dtype:
`Module.to(dtype)` would round the float32 scales too.
"""

from __future__ import annotations

import torch
from torch import nn

from megadoc.engine.model import Megalodon
from megadoc.kernels.linear import quantize_per_channel


def fused_linears(model: Megalodon) -> list[nn.Linear]:
    """The linears whose weights go through `fused_linear`: each layer's projections (wz, wv, wr,
    wh1, wh2) and feed-forward (fc1, fc2, fc3), and the output head unless it is the embedding."""
    linears = []
    for layer in model.layers:
        mega, nffn = layer.mega, layer.nffn
        linears += [mega.wz, mega.wv, mega.wr, mega.wh1, mega.wh2, nffn.fc1, nffn.fc2]
        if nffn.fc3 is not None:
            linears.append(nffn.fc3)
    if not model.config.share_emb:
        linears.append(model.output.output)
    return linears


@torch.no_grad()
def quantize_weights(model: Megalodon) -> Megalodon:
    """Store `model`'s `fused_linears` as int8 weights with their scales in a `weight_scale` buffer
    (what the model's forward passes to `fused_linear`), in place; returns the model. Layers already
    in int8 are left as they are."""
    for linear in fused_linears(model):
        if linear.weight.dtype == torch.int8:
            continue
        weight, scale = quantize_per_channel(linear.weight)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        linear.register_buffer("weight_scale", scale)
    return model
