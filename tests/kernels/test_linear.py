"""The fused linear kernel (kernels/linear/triton.py) against its reference, on fresh random inputs.

Without a GPU it runs under triton's interpreter on small shapes (conftest.py sets
TRITON_INTERPRET=1); with one, the tests marked `gpu` add the 7B's and mini's decoding shapes. The
reference is `linear.reference.fused_linear` in float64 on the same inputs; int8 weights
(`quantize_per_channel`) go to both as they are, the reference dequantizing them in float64.
"""

import pytest
import torch

pytest.importorskip("triton")

from megadoc.kernels.linear import MAX_FUSED_ROWS, fused_linear, quantize_per_channel  # noqa: E402
from megadoc.kernels.linear.reference import fused_linear as fused_linear_reference  # noqa: E402
from megadoc.kernels.linear.triton import fused_linear_triton  # noqa: E402
from tests.helpers import DEVICE, needs_cuda, rel_err  # noqa: E402

FUSIONS = {  # the model's uses: q/k and values, the gates, the residual adds, SwiGLU
    "plain": {},
    "bias": {"bias": True},
    "bias_silu": {"bias": True, "silu": True},
    "bias_residual": {"bias": True, "residual": True},
    "scale_residual": {"scale": True, "residual": True},
    "swiglu": {"silu": True, "up": True},
}


def check(
    rows: int,
    n: int,
    k: int,
    fusion: str,
    dtype: torch.dtype,
    seed: int,
    lead: tuple[int, ...] = (),
    int8: bool = False,
    **tiles: int,
) -> None:
    parts = FUSIONS[fusion]
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).to(DEVICE, dtype)

    shape = (*lead, rows) if lead else (rows,)
    x = rand(*shape, k)
    weight = rand(n, k, std=k**-0.5)
    args = {
        "bias": rand(n, std=0.5) if parts.get("bias") else None,
        "silu": parts.get("silu", False),
        "up": rand(n, k, std=k**-0.5) if parts.get("up") else None,
        "scale": rand(*shape, k) if parts.get("scale") else None,
        "residual": rand(*shape, n) if parts.get("residual") else None,
    }
    if int8:
        weight, args["weight_scale"] = quantize_per_channel(weight)
        if args["up"] is not None:
            args["up"], args["up_scale"] = quantize_per_channel(args["up"])

    def wide(t: torch.Tensor | bool | None) -> torch.Tensor | bool | None:
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    ref = fused_linear_reference(x.double(), wide(weight), **{name: wide(value) for name, value in args.items()})
    out = fused_linear_triton(x, weight, **args, **tiles)
    assert out.dtype == dtype and out.shape == (*shape, n)
    assert rel_err(out, ref) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("rows,n,k", [(1, 48, 64), (3, 40, 72), (16, 17, 33)])
def test_fused_linear_matches_reference(rows, n, k, fusion, int8):
    """Ragged N and K (masked tails), 1 to 16 rows, every fusion the model uses, float and int8 weights."""
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    check(rows, n, k, fusion, dtype, seed=rows * 1000 + n + k, int8=int8)


def test_fused_linear_takes_leading_dims_and_gated_input():
    """x [B, T, K] as the model passes it; bf16 operands, float32 inside, one rounding."""
    check(2, 24, 64, "scale_residual", torch.bfloat16, seed=5, lead=(3,))
    check(1, 32, 96, "swiglu", torch.bfloat16, seed=6, lead=(2,))
    check(1, 32, 96, "swiglu", torch.bfloat16, seed=7, lead=(2,), int8=True)


def test_quantize_per_channel_round_trip_and_zero_rows():
    """Each weight within half a step (scale / 2) of its dequantized value; each row's largest
    magnitude maps to +-127; a zero row gets scale 1 and stays zero; bf16 weights quantize too."""
    gen = torch.Generator().manual_seed(11)
    weight = torch.randn(6, 40, generator=gen) * torch.logspace(-3, 1, 6)[:, None]
    weight[2] = 0
    for w in (weight, weight.bfloat16()):
        quantized, scale = quantize_per_channel(w)
        assert quantized.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (6,)
        error = (quantized.float() * scale[:, None] - w.float()).abs()
        assert (error <= scale[:, None] / 2 * (1 + 1e-6)).all()
        assert torch.equal(quantized.abs().amax(1), torch.tensor([127, 127, 0, 127, 127, 127], dtype=torch.int8))
        assert scale[2] == 1 and not quantized[2].any()


def test_int8_weights_need_their_scales():
    x = torch.randn(2, 32, device=DEVICE)
    weight, weight_scale = quantize_per_channel(torch.randn(16, 32, device=DEVICE))
    with pytest.raises(ValueError, match="per-row scale"):
        fused_linear_triton(x, weight)
    with pytest.raises(ValueError, match="per-row scale"):
        fused_linear_triton(x, weight, silu=True, up=weight, weight_scale=weight_scale)
    with pytest.raises(ValueError, match="per-row scale"):
        fused_linear_reference(x, weight)


def test_fused_linear_refuses_more_rows_than_a_tile():
    x = torch.randn(MAX_FUSED_ROWS + 1, 32, device=DEVICE)
    with pytest.raises(ValueError, match="at most 16 rows"):
        fused_linear_triton(x, torch.randn(16, 32, device=DEVICE))


def test_fused_linear_dispatch_keeps_the_reference_off_cuda():
    """On CPU tensors (and for many rows) the entry point is the reference, bit for bit."""
    gen = torch.Generator().manual_seed(3)
    x, w, r = torch.randn(4, 8, generator=gen), torch.randn(6, 8, generator=gen), torch.randn(4, 6, generator=gen)
    assert torch.equal(fused_linear(x, w, residual=r), torch.addmm(r, x, w.t()))
    assert torch.equal(fused_linear(x, w, silu=True, up=w), torch.nn.functional.silu(x @ w.t()) * (x @ w.t()))
    q, s = quantize_per_channel(w)
    dequantized = q.float() * s[:, None]
    assert torch.equal(fused_linear(x, q, residual=r, weight_scale=s), torch.addmm(r, x, dequantized.t()))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
@pytest.mark.parametrize("rows", [1, 8])
@pytest.mark.parametrize(
    "n,k,fusion",
    [
        (1024, 4096, "bias"),
        (8192, 4096, "bias_silu"),
        (4096, 4096, "bias_residual"),
        (4096, 8192, "scale_residual"),
        (8192, 4096, "swiglu"),
        (4096, 8192, "plain"),
        (32000, 4096, "plain"),
    ],
)
def test_fused_linear_7b_shapes(rows, n, k, fusion, int8):
    check(rows, n, k, fusion, torch.bfloat16, seed=n + k + rows, int8=int8)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
@pytest.mark.parametrize(
    "n,k,fusion",
    [(128, 384, "bias"), (768, 384, "bias_silu"), (384, 1024, "plain"), (1024, 384, "swiglu"), (12288, 384, "plain")],
)
def test_fused_linear_mini_shapes(n, k, fusion, int8):
    check(1, n, k, fusion, torch.bfloat16, seed=n + k, int8=int8)
    check(5, n, k, fusion, torch.float16, seed=n + k + 1, int8=int8)
