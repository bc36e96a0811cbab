"""The one-pass norms (kernels/norm/triton.py) against their references, on fresh random inputs:
under triton's interpreter on the CPU, compiled on a GPU (the `gpu` tests add the 7B's shapes)."""

import pytest
import torch

pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

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


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("rows", [1, 8, 4096])
def test_norms_7b_shapes(rows):
    check_norm((1, rows, 4096), True, True, torch.bfloat16, seed=rows)
    check_norm((1, rows, 4096), False, True, torch.bfloat16, seed=rows + 1)
