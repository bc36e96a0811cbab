"""The one-pass norms (kernels/norm/triton.py), the fused q/k (normalized_qk) and the decoding
cache write (write_slot) against their references, on fresh random inputs: under triton's
interpreter on the CPU, compiled on a GPU (the `gpu` tests add the 7B's shapes)."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from megadoc.kernels.attention import normalized_qk, rotation, write_slot  # noqa: E402
from megadoc.kernels.attention.triton import normalized_qk_triton, write_slot_triton  # noqa: E402
from megadoc.kernels.norm import layer_norm, rms_norm  # noqa: E402
from megadoc.kernels.norm.triton import row_norm_triton  # noqa: E402
from tests.helpers import DEVICE, needs_cuda, rel_err  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_kernels")

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def check_norm(shape: tuple[int, ...], center: bool, affine: bool, dtype: torch.dtype, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    dim = shape[-1]
    x = (torch.randn(*shape, generator=gen) * 3 + 1).to(DEVICE, dtype)
    weight = (torch.randn(dim, generator=gen) * 0.2 + 1).to(DEVICE) if affine else None
    bias = (torch.randn(dim, generator=gen) * 0.2).to(DEVICE) if affine and center else None
    wide = None if weight is None else weight.double()
    if center:
        ref = F.layer_norm(x.double(), (dim,), wide, None if bias is None else bias.double(), 1e-5)
    else:
        ref = F.rms_norm(x.double(), (dim,), wide, 1e-5)
    out = row_norm_triton(x, weight, bias, 1e-5, center=center)
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize(
    "shape,affine", [((1, 1, 32), True), ((2, 5, 48), True), ((3, 7, 100), False), ((1, 3, 384), True)]
)
def test_row_norm_matches_reference(shape, center, affine):
    """Ragged widths (masked lanes must not enter the mean), with and without the affine."""
    check_norm(shape, center, affine, torch.float32, seed=shape[-1] + center)
    check_norm(shape, center, affine, torch.bfloat16, seed=shape[-1] + center + 1)


def test_row_norm_reference_is_torch_in_float32():
    """The references: PyTorch's norms on the float32 upcast, cast back."""
    x = torch.randn(4, 24).to(torch.bfloat16)
    w, b = torch.rand(24) + 0.5, torch.randn(24)
    assert torch.equal(layer_norm(x, w, b, 1e-5), F.layer_norm(x.float(), (24,), w, b, 1e-5).to(torch.bfloat16))
    assert torch.equal(rms_norm(x, w, 1e-5), F.rms_norm(x.float(), (24,), w, 1e-5).to(torch.bfloat16))


def check_qk(batch: int, length: int, heads: int, zh: int, dtype: torch.dtype, seed: int, start: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(batch, length, heads, zh, generator=gen) * 2).to(DEVICE, dtype)
    scale = (torch.randn(2, 1, 1, heads, zh, generator=gen) * 0.3 + 1).to(DEVICE)
    shift = (torch.randn(2, 1, 1, heads, zh, generator=gen) * 0.3).to(DEVICE)
    freqs = 1.0 / 10000 ** (torch.arange(0, zh, 2).float() / zh)
    rotations = rotation(freqs.to(DEVICE), torch.arange(start, start + length, device=DEVICE))
    ref = normalized_qk(z.double(), shift.double(), scale.double(), rotations.to(torch.complex128), 1e-5)
    out = normalized_qk_triton(z, shift, scale, rotations, 1e-5)
    assert out.dtype == dtype and out.shape == (2, batch, length, heads, zh)
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("batch,length,heads,zh", [(1, 1, 2, 16), (2, 9, 2, 8), (3, 4, 4, 64), (1, 5, 1, 12)])
def test_normalized_qk_matches_reference(batch, length, heads, zh):
    """Each token's own rotation (positions far into a chunk), q and k's own affine per head."""
    check_qk(batch, length, heads, zh, torch.float32, seed=zh + length, start=1000)
    check_qk(batch, length, heads, zh, torch.bfloat16, seed=zh + length + 1)


@pytest.mark.parametrize(
    "batch,heads,slots,dk,dv,slot", [(1, 2, 8, 16, 32, 0), (3, 2, 16, 8, 24, 15), (2, 4, 5, 12, 20, 3)]
)
def test_write_slot_writes_exactly_one_slot(batch, heads, slots, dk, dv, slot):
    gen = torch.Generator().manual_seed(slot)
    k_buf = torch.randn(batch, heads, slots, dk, generator=gen).to(DEVICE)
    v_buf = torch.randn(batch, heads, slots, dv, generator=gen).to(DEVICE)
    k = torch.randn(batch, 1, heads, dk, generator=gen).to(DEVICE)
    v = torch.randn(batch, 1, heads, dv, generator=gen).to(DEVICE)
    index = torch.tensor([slot], device=DEVICE)
    ref_k, ref_v = k_buf.clone(), v_buf.clone()
    write_slot(ref_k, ref_v, k, v, index)
    write_slot_triton(k_buf, v_buf, k, v, index)
    assert torch.equal(k_buf, ref_k) and torch.equal(v_buf, ref_v)
    assert torch.equal(ref_k[:, :, slot], k[:, 0]) and torch.equal(ref_v[:, :, slot], v[:, 0])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("rows", [1, 8, 4096])
def test_norms_and_qk_7b_shapes(rows):
    check_norm((1, rows, 4096), True, True, torch.bfloat16, seed=rows)
    check_norm((1, rows, 4096), False, True, torch.bfloat16, seed=rows + 1)
    check_qk(1, rows, 4, 256, torch.bfloat16, seed=rows, start=4096 - rows)
