"""The timestep norm's Triton kernels (kernels/timestep_norm/triton.py) against their references: the
span and the step forward, and the backward against autograd through the reference, on fresh random
inputs: under triton's interpreter on the CPU with small shapes, compiled
on a GPU (the `gpu` tests add the mini's training shape). References run in float64 on the same
device, except where a test says otherwise."""

import pytest
import torch

pytest.importorskip("triton")


from megadoc.kernels import backend  # noqa: E402
from megadoc.kernels import timestep_norm as timestep_norm_module  # noqa: E402
from megadoc.kernels.timestep_norm import (  # noqa: E402
    NormStats,
    timestep_norm,
    timestep_norm_step,  # noqa: E402
)
from megadoc.kernels.timestep_norm import triton as triton_module  # noqa: E402
from megadoc.kernels.timestep_norm.triton import (  # noqa: E402
    timestep_norm_step_triton,  # noqa: E402
    timestep_norm_triton,
    timestep_norm_triton_autograd,
)
from tests.helpers import (  # noqa: E402
    DEVICE,
    TOL,
    needs_cuda,
    rel_err,
    seed_for,
    timestep_norm_inputs,
)

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


# -- timestep norm ---------------------------------------------------------------------------

NORM_SHAPES = [  # batch, length, dim, groups, padding, carried count
    (1, 1, 16, 4, False, 0),
    (2, 37, 24, 4, False, 0),
    (2, 150, 24, 4, True, 0),
    (3, 70, 40, 5, True, 1_000_000),
    (1, 65, 64, 2, False, 12),
]


def check_norm(batch, length, dim, groups, padding, count, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x, stats, weight, bias, mask = timestep_norm_inputs(batch, length, dim, groups, padding, count, dtype, gen)
    y_ref, s_ref = timestep_norm(
        x.to(torch.float64), stats, weight.to(torch.float64), bias.to(torch.float64), padding_mask=mask
    )
    y, s = timestep_norm_triton(x, stats, weight, bias, padding_mask=mask)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, y_ref) < TOL[dtype]
    if mask is not None:
        assert (y[mask] == 0).all()
    assert torch.equal(s.count, s_ref.count)
    assert rel_err(s.mean, s_ref.mean) < TOL[torch.float32] and rel_err(s.var, s_ref.var) < TOL[torch.float32]


@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_timestep_norm_matches_reference(shape):
    check_norm(*shape, torch.float32, seed=seed_for(shape))


def test_timestep_norm_bf16():
    check_norm(2, 80, 32, 4, True, 300, torch.bfloat16, seed=3)


def test_timestep_norm_streams_in_pieces():
    """Two calls carrying the statistics equal one call over the whole span."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 90, 24, generator=gen).to(DEVICE)
    w, b = torch.zeros(24, device=DEVICE), torch.zeros(24, device=DEVICE)
    fresh = NormStats(torch.zeros(2, dtype=torch.int64), torch.zeros(2, 4), torch.ones(2, 4))
    fresh = NormStats(*(t.to(DEVICE) for t in (fresh.count, fresh.mean, fresh.var)))
    whole, _ = timestep_norm_triton(x, fresh, w, b)
    first, mid = timestep_norm_triton(x[:, :33], fresh, w, b)
    second, _ = timestep_norm_triton(x[:, 33:], mid, w, b)
    assert rel_err(torch.cat([first, second], 1), whole) < 1e-6


STEP_SHAPES = [  # batch, dim, groups, carried count, dtype
    (1, 16, 4, 0, torch.float32),
    (3, 36, 4, 1_000_000, torch.float32),  # groups of 9
    (2, 384, 32, 5, torch.bfloat16),  # the mini's groups of 12
    (8, 40, 5, 12, torch.bfloat16),
]


def random_stats(batch: int, groups: int, count: int, gen: torch.Generator) -> NormStats:
    return NormStats(
        (torch.full((batch,), count, dtype=torch.int64) + torch.arange(batch)).to(DEVICE),
        (torch.randn(batch, groups, generator=gen) + 5).to(DEVICE),
        (torch.rand(batch, groups, generator=gen) + 8).to(DEVICE),
    )


def check_norm_step(batch, dim, groups, count, dtype, seed):
    """The one-token kernel against the reference step in float64; out of place, into poisoned
    tensors, and in place (out = stats)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, dim, generator=gen) * 3 + 5).to(dtype).to(DEVICE)
    stats = random_stats(batch, groups, count, gen)
    weight, bias = (torch.randn(dim, generator=gen) * 0.1 for _ in range(2))
    y_ref, s_ref = timestep_norm_step(
        x.double(), stats, weight.to(DEVICE, torch.float64), bias.to(DEVICE, torch.float64)
    )
    weight, bias = weight.to(DEVICE), bias.to(DEVICE)
    y, s = timestep_norm_step_triton(x, stats, weight, bias)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, y_ref) < TOL[dtype]
    assert torch.equal(s.count, s_ref.count) and s.mean.dtype == s_ref.mean.dtype
    assert rel_err(s.mean, s_ref.mean) < TOL[torch.float32] and rel_err(s.var, s_ref.var) < TOL[torch.float32]

    nan = torch.nan
    poisoned = NormStats(torch.full_like(s.count, -1), torch.full_like(s.mean, nan), torch.full_like(s.var, nan))
    y_out, out = timestep_norm_step_triton(x, stats, weight, bias, out=poisoned)
    in_place = stats.clone()
    y_in, updated = timestep_norm_step_triton(x, in_place, weight, bias, out=in_place)
    assert out is poisoned and updated is in_place
    for got in (out, updated):
        assert torch.equal(got.count, s.count) and torch.equal(got.mean, s.mean) and torch.equal(got.var, s.var)
    assert torch.equal(y_out, y) and torch.equal(y_in, y)


@pytest.mark.parametrize("shape", STEP_SHAPES)
def test_timestep_norm_step_matches_reference(shape):
    check_norm_step(*shape, seed=seed_for(shape))


def test_timestep_norm_step_continues_the_span():
    """Steps one token at a time reach the statistics of one call over the span."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 6, 24, generator=gen).to(DEVICE)
    w, b = torch.zeros(24, device=DEVICE), torch.zeros(24, device=DEVICE)
    stats = random_stats(2, 4, 100, gen)
    whole, s_whole = timestep_norm_triton(x, stats, w, b)
    steps = stats.clone()
    ys = [timestep_norm_step_triton(x[:, t], steps, w, b, out=steps)[0] for t in range(x.shape[1])]
    assert rel_err(torch.stack(ys, 1), whole) < 1e-5
    assert torch.equal(steps.count, s_whole.count) and rel_err(steps.var, s_whole.var) < 1e-5


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,length,count", [(1, 4096, 0), (3, 1000, 1_000_000), (1, 4100, 37)])
def test_timestep_norm_7b_shapes(batch, length, count):
    check_norm(batch, length, 4096, 64, True, count, torch.bfloat16, seed=length)
    check_norm(batch, length, 4096, 64, False, count, torch.float32, seed=length + 1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 8])
def test_timestep_norm_step_7b_shapes(batch):
    check_norm_step(batch, 4096, 64, 1_000_000, torch.bfloat16, seed=batch)
    check_norm_step(batch, 4096, 64, 37, torch.float32, seed=batch + 1)
