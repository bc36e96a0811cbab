"""The timestep norm's Triton backward (kernels/timestep_norm/triton.py) against autograd through the
reference, on fresh random inputs: under triton's interpreter on the CPU with small shapes, compiled
on a GPU (the `gpu` tests add the mini's training shape). References run in float64 on the same
device, except where a test says otherwise."""

import pytest
import torch

pytest.importorskip("triton")

from megadoc.kernels import backend  # noqa: E402
from megadoc.kernels import timestep_norm as timestep_norm_module  # noqa: E402
from megadoc.kernels.timestep_norm import NormStats, timestep_norm  # noqa: E402
from megadoc.kernels.timestep_norm import triton as triton_module  # noqa: E402
from megadoc.kernels.timestep_norm.triton import (  # noqa: E402
    timestep_norm_triton,
    timestep_norm_triton_autograd,
)
from tests.helpers import DEVICE, TOL, needs_cuda, rel_err, seed_for, timestep_norm_inputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_kernels")


def make_inputs(batch, length, dim, groups, padding, count, dtype, seed):
    """helpers.timestep_norm_inputs and dy."""
    gen = torch.Generator().manual_seed(seed)
    x, stats, weight, bias, mask = timestep_norm_inputs(batch, length, dim, groups, padding, count, dtype, gen)
    dy = torch.randn(batch, length, dim, generator=gen).to(dtype)
    return x, stats, weight, bias, mask, dy.to(DEVICE)


def reference_grads(x, stats, weight, bias, mask, dy, dtype=torch.float64):
    """y and (dx, dweight, dbias) by autograd through the reference, with x, weight, bias and dy in `dtype`."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight, bias)]
    y, _ = timestep_norm(*leaves[:1], stats, *leaves[1:], padding_mask=mask)
    y.backward(dy.to(dtype))
    return y.detach(), [t.grad for t in leaves]


def check_grad(batch, length, dim, groups, padding, count, dtype, seed):
    x, stats, weight, bias, mask, dy = make_inputs(batch, length, dim, groups, padding, count, dtype, seed)
    y_ref, grads_ref = reference_grads(x, stats, weight, bias, mask, dy)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y, s = timestep_norm_triton_autograd(leaves[0], stats, *leaves[1:], padding_mask=mask)
    y.backward(dy)
    dx, dweight, dbias = (t.grad for t in leaves)
    assert y.dtype == dtype and dx.dtype == dtype and dweight.dtype == dbias.dtype == torch.float32
    assert rel_err(y, y_ref) < TOL[dtype]
    assert rel_err(dx, grads_ref[0]) < TOL[dtype]
    assert rel_err(dweight, grads_ref[1]) < TOL[torch.float32]
    assert rel_err(dbias, grads_ref[2]) < TOL[torch.float32]
    if mask is not None:
        assert (dx[mask] == 0).all() and (y.detach()[mask] == 0).all()
    # The forward is the inference kernel's, bit for bit; its statistics take no gradient.
    y_fwd, s_fwd = timestep_norm_triton(x, stats, weight, bias, padding_mask=mask)
    assert torch.equal(y.detach(), y_fwd)
    for got, want in ((s.count, s_fwd.count), (s.mean, s_fwd.mean), (s.var, s_fwd.var)):
        assert torch.equal(got, want) and not got.requires_grad


GRAD_SHAPES = [  # batch, length, dim, groups, padding, carried count
    (1, 1, 16, 4, False, 0),
    (2, 37, 24, 4, False, 0),  # groups of 6, one ragged block
    (2, 150, 24, 4, True, 0),  # three blocks, padded tokens before and after valid ones
    (3, 70, 36, 4, True, 12),  # groups of 9; a few carried tokens: the statistics' gradients are large
    (1, 130, 64, 2, False, 1_000_000),
]


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_timestep_norm_grad_matches_reference(shape):
    check_grad(*shape, torch.float32, seed=seed_for(shape))


def test_timestep_norm_grad_bf16():
    check_grad(2, 80, 32, 4, True, 300, torch.bfloat16, seed=3)
    check_grad(1, 70, 384, 32, False, 5, torch.bfloat16, seed=4)  # the mini's groups of 12


def test_timestep_norm_grad_of_an_empty_span():
    x, stats, weight, bias, _, _ = make_inputs(2, 0, 16, 4, False, 7, torch.float32, seed=1)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y, s = timestep_norm_triton_autograd(leaves[0], stats, *leaves[1:])
    (y.sum() + (leaves[1] + leaves[2]).sum()).backward()
    assert y.shape == x.shape and torch.equal(leaves[1].grad, torch.ones(16, device=DEVICE))
    assert torch.equal(s.count, stats.count) and torch.equal(s.mean, stats.mean) and torch.equal(s.var, stats.var)


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """The names of the Triton entry points `timestep_norm` calls, in order (they still run)."""
    calls = []

    def spy(name):
        fn = getattr(triton_module, name)

        def call(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return call

    for name in ("timestep_norm_triton", "timestep_norm_triton_autograd"):
        monkeypatch.setattr(triton_module, name, spy(name))
    return calls


def test_timestep_norm_dispatch(monkeypatch, kernel_calls):
    """Recording a gradient of x, weight or bias: the autograd.Function; not recording: the forward
    kernel; recording but nothing requires a gradient: the reference. The rule as on CUDA, here by
    patching `use_triton*` (the kernels run under the interpreter on the CPU)."""
    x, stats, weight, bias, _, _ = make_inputs(2, 9, 16, 4, False, 3, torch.float32, seed=2)
    monkeypatch.setattr(timestep_norm_module, "use_triton", lambda x: not torch.is_grad_enabled())
    monkeypatch.setattr(timestep_norm_module, "use_triton_autograd", lambda x: True)
    for needs_grad in ((True, False, False), (False, True, False), (False, False, True)):
        leaves = [t.clone().requires_grad_(g) for t, g in zip((x, weight, bias), needs_grad, strict=True)]
        timestep_norm(leaves[0], stats, *leaves[1:])
    assert kernel_calls == ["timestep_norm_triton_autograd"] * 3
    with torch.no_grad():
        timestep_norm(x, stats, weight, bias)
    assert kernel_calls[3:] == ["timestep_norm_triton"]
    timestep_norm(x, stats, weight, bias)
    assert len(kernel_calls) == 4


def test_timestep_norm_dispatch_keeps_the_reference_off_cuda(monkeypatch, kernel_calls):
    """CPU tensors take the differentiable reference even with the Triton kernels allowed."""
    with backend("auto"):
        x, stats, weight, bias, _, _ = make_inputs(2, 9, 16, 4, False, 3, torch.float32, seed=2)
        x, weight, bias = x.cpu(), weight.cpu(), bias.cpu()
        stats = NormStats(stats.count.cpu(), stats.mean.cpu(), stats.var.cpu())
        y, s = timestep_norm(x.requires_grad_(), stats, weight, bias)
        with torch.no_grad():
            timestep_norm(x, stats, weight, bias)
        assert kernel_calls == [] and y.requires_grad and s.mean.requires_grad


# -- larger shapes on the GPU ----------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_timestep_norm_grad_mini_training_shape(monkeypatch, kernel_calls):
    """The mini's training call (8 rows of 16,384 tokens, D=384 in 32 groups, bf16 x and dy, fresh
    statistics) through the entry point, against autograd through the reference in float32 (whose
    sums are float64). y and dx are bf16: one rounding, ~2e-3. dweight and dbias sum 131,072
    float32 terms per feature: ~4e-7 measured on one row under the interpreter; 1e-5 leaves room
    for another summation order."""
    x, stats, weight, bias, _, dy = make_inputs(8, 16384, 384, 32, False, 0, torch.bfloat16, seed=8)
    y_ref, (dx_ref, dweight_ref, dbias_ref) = reference_grads(x, stats, weight, bias, None, dy, torch.float32)
    with backend("auto"):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        y, _ = timestep_norm(leaves[0], stats, *leaves[1:])
        y.backward(dy)
        assert kernel_calls == ["timestep_norm_triton_autograd"]
        assert rel_err(y, y_ref) < TOL[torch.bfloat16]
        assert rel_err(leaves[0].grad, dx_ref) < TOL[torch.bfloat16]
        assert rel_err(leaves[1].grad, dweight_ref) < 1e-5
        assert rel_err(leaves[2].grad, dbias_ref) < 1e-5


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "batch,length,dim,groups,count",
    [
        (2, 5000, 384, 32, 0),
        (2, 5000, 384, 32, 1000),
        (1, 4100, 4096, 64, 37),
    ],
)
def test_timestep_norm_grad_long_spans(batch, length, dim, groups, count):
    """Many blocks with padding, fresh or carried statistics, the 7B's width included, against float64."""
    check_grad(batch, length, dim, groups, True, count, torch.float32, seed=length + count)
    check_grad(batch, length, dim, groups, True, count, torch.bfloat16, seed=length + count + 1)
