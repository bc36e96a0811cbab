"""The grouped fused linear (one launch over the weights that read the same x: `LinearGroup`,
`fused_linear_grouped`) against its reference, the segments' `fused_linear` calls in float64.

Without a GPU the kernel runs under triton's interpreter on small shapes (conftest.py sets
TRITON_INTERPRET=1); with one, the tests marked `gpu` add the 7B's and mini's reads of m (wz, wr and
wh1 of a decoding step)."""

import pytest
import torch

pytest.importorskip("triton")

from megadoc.kernels.linear import LinearGroup, fused_linear, fused_linear_grouped, quantize_per_channel  # noqa: E402
from megadoc.kernels.linear.reference import fused_linear_grouped as fused_linear_grouped_reference  # noqa: E402
from megadoc.kernels.linear.triton import fused_linear_grouped_triton, fused_linear_triton  # noqa: E402
from tests.helpers import DEVICE, needs_cuda, rel_err  # noqa: E402

GROUPS = {  # each segment's epilogue, in order
    "m_reads": ({"bias"}, {"bias", "silu"}, {"bias", "residual"}),  # the model's wz, wr, wh1
    "silu_first_no_bias": ({"silu"}, {"silu", "bias"}, set()),
    "residual_first": ({"residual"}, {"bias"}, {"silu"}),
}


def make_group(
    sizes: tuple[int, ...],
    k: int,
    group: str,
    dtype: torch.dtype,
    seed: int,
    int8: bool = False,
    lead: tuple[int, ...] = (1,),
    device: str = DEVICE,
) -> tuple[torch.Tensor, list[dict], list[torch.Tensor | None]]:
    """x [*lead, K], each segment's `fused_linear` arguments and the residuals [*lead, Ni] (or None)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).to(device, dtype)

    x = rand(*lead, k)
    segments, residuals = [], []
    for n, parts in zip(sizes, GROUPS[group], strict=True):
        args = {"weight": rand(n, k, std=k**-0.5), "bias": rand(n, std=0.5) if "bias" in parts else None}
        args["silu"], args["weight_scale"] = "silu" in parts, None
        if int8:
            args["weight"], args["weight_scale"] = quantize_per_channel(args["weight"])
        segments.append(args)
        residuals.append(rand(*lead, n) if "residual" in parts else None)
    return x, segments, residuals


def group_of(segments: list[dict], wide: bool = False) -> LinearGroup:
    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return t.double() if wide and t is not None and t.is_floating_point() else t

    return LinearGroup.of(
        [cast(s["weight"]) for s in segments],
        [cast(s["bias"]) for s in segments],
        silu=[s["silu"] for s in segments],
        weight_scales=[cast(s["weight_scale"]) for s in segments],
    )


def check(sizes, k, group, dtype, seed, int8=False, lead=(1,), **tiles) -> None:
    x, segments, residuals = make_group(sizes, k, group, dtype, seed, int8, lead)
    wide = [None if r is None else r.double() for r in residuals]
    expected = fused_linear_grouped_reference(x.double(), group_of(segments, wide=True), wide)
    got = fused_linear_grouped_triton(x, group_of(segments), residuals, **tiles)
    for n, out, ref in zip(sizes, got, expected, strict=True):
        assert out.dtype == dtype and out.shape == (*lead, n)
        assert rel_err(out, ref) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("rows,sizes,k", [(1, (16, 48, 32), 64), (3, (17, 9, 23), 40), (16, (5, 30, 12), 33)])
def test_grouped_matches_reference(rows, sizes, k, group, int8):
    """Ragged segments (boundaries inside a program's columns), 1 to 16 rows, the model's epilogues
    and others, float and int8 weights."""
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    check(sizes, k, group, dtype, seed=rows * 100 + sum(sizes) + k, int8=int8, lead=(rows,))


def test_grouped_takes_leading_dims_and_bf16():
    """x [B, T, K] as the decoder passes m; bf16 operands and int8 weights."""
    check((16, 64, 32), 32, "m_reads", torch.bfloat16, seed=1, lead=(2, 1))
    check((16, 64, 32), 32, "m_reads", torch.bfloat16, seed=2, lead=(2, 1), int8=True)


def test_a_group_of_one_is_the_single_call():
    """The grouped launch of one segment is `fused_linear_triton`, bit for bit (the same kernel, its
    SiLU and residual columns all of N)."""
    x, segments, residuals = make_group((40, 8, 8), 48, "residual_first", torch.float32, seed=3, lead=(2,))
    for silu in (False, True):
        seg = segments[0] | {"silu": silu}
        (grouped,) = fused_linear_grouped_triton(x, group_of([seg]), residuals[:1])
        assert torch.equal(grouped, fused_linear_triton(x, seg["weight"], silu=silu, residual=residuals[0]))


def test_reference_is_the_separate_calls_and_the_entry_point_keeps_it_off_cuda():
    """On CPU tensors the entry point is the reference: each segment's `fused_linear`, bit for bit."""
    x, segments, residuals = make_group((8, 12, 6), 16, "m_reads", torch.float32, seed=4, lead=(3,), device="cpu")
    separate = [fused_linear(x, **s, residual=r) for s, r in zip(segments, residuals, strict=True)]
    for got, expected in zip(fused_linear_grouped(x, group_of(segments), residuals), separate, strict=True):
        assert torch.equal(got, expected)


def test_load_refreshes_the_group_in_place():
    _, segments, _ = make_group((8, 12, 6), 16, "m_reads", torch.float32, seed=5, int8=True)
    group = group_of(segments)
    address = group.weight.data_ptr()
    _, fresh, _ = make_group((8, 12, 6), 16, "m_reads", torch.float32, seed=6, int8=True)
    group.load_([s["weight"] for s in fresh], [s["bias"] for s in fresh], [s["weight_scale"] for s in fresh])
    assert group.weight.data_ptr() == address
    assert torch.equal(group.weight, torch.cat([s["weight"] for s in fresh]))
    assert torch.equal(group.weight_scale, torch.cat([s["weight_scale"] for s in fresh]))
    assert torch.equal(group.bias, torch.cat([s["bias"] for s in fresh]))


def test_groups_refuse_what_one_launch_cannot_do():
    w = torch.randn(4, 8)
    q, s = quantize_per_channel(w)
    with pytest.raises(ValueError, match="adjacent"):
        LinearGroup.of([w, w, w], [None] * 3, silu=(True, False, True))
    with pytest.raises(ValueError, match="input size and dtype"):
        LinearGroup.of([w, q], [None, None], silu=(False, False), weight_scales=[None, s])
    with pytest.raises(ValueError, match="per-row scale"):
        LinearGroup.of([q, q], [None, None], silu=(False, False), weight_scales=[s, None])
    group = LinearGroup.of([w, w], [None, None], silu=(False, False))
    x, r = torch.randn(2, 8), torch.randn(2, 4)
    for fn in (fused_linear_grouped_reference, fused_linear_grouped_triton):
        with pytest.raises(ValueError, match="at most takes a residual"):
            fn(x, group, (r, r))
        with pytest.raises(ValueError, match="1 residuals for a group of 2"):
            fn(x, group, (r,))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
@pytest.mark.parametrize("rows", [1, 8])
@pytest.mark.parametrize("sizes,k", [((1024, 8192, 4096), 4096), ((128, 768, 384), 384)], ids=["7b", "mini"])
def test_grouped_decode_shapes(sizes, k, rows, int8):
    """wz, wr and wh1 of the 7B and mini as a decoding step reads them (m [B, 1, D])."""
    check(sizes, k, "m_reads", torch.bfloat16, seed=rows + k, int8=int8, lead=(rows, 1))
    check(sizes, k, "m_reads", torch.float16, seed=rows + k + 1, int8=int8, lead=(rows, 1))
