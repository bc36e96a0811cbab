"""CEMA's Triton kernels (kernels/cema/triton.py) against their references: the scan and the step
forward, and the backward (`cema_triton_autograd`) against autograd through the references, with
`cema`'s dispatch to it.

Without a GPU the kernels run under triton's interpreter on CPU tensors and small shapes: gradients for
x, h_0 and the five parameters against autograd through `cema_sequential` in float64. With one, the
tests marked `gpu` add the mini model's training shape against `cema_chunked`'s autograd in float64.
"""

import pytest
import torch

pytest.importorskip("triton")


from megadoc.kernels import backend  # noqa: E402
from megadoc.kernels import cema as cema_module  # noqa: E402
from megadoc.kernels.cema import (  # noqa: E402
    cema,
    cema_coefficients,
    cema_step,  # noqa: E402
)
from megadoc.kernels.cema import triton as cema_triton_module  # noqa: E402
from megadoc.kernels.cema.reference import cema_chunked, cema_sequential  # noqa: E402
from megadoc.kernels.cema.triton import (  # noqa: E402
    cema_step_triton,  # noqa: E402
    cema_triton,
    cema_triton_autograd,
)
from tests.helpers import DEVICE, TOL, cema_params, needs_cuda, rel_err, seed_for  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_kernels")

NAMES = ("y", "h", "x", "h0", "alpha", "delta", "theta", "gamma", "omega")


def cema_grads(fn, params, x, h0, dy, dh, real):
    """fn's (y, h) and the gradients of sum(y dy) + sum(Re(conj(dh) h)) for x, h0 and the parameters;
    inputs, parameters and h0 in `real` precision (x keeps its dtype when `real` is float32)."""
    leaves = [p.to(DEVICE, real, copy=True).requires_grad_() for p in params]
    xs = x.to(DEVICE, x.dtype if real == torch.float32 else real, copy=True).requires_grad_()
    complex_dtype = torch.complex64 if real == torch.float32 else torch.complex128
    hs = None if h0 is None else h0.to(DEVICE, complex_dtype, copy=True).requires_grad_()
    y, h = fn(xs, cema_coefficients(*leaves), hs)
    loss = 0
    if dy is not None:
        loss = loss + (y.double() * dy.to(DEVICE, torch.float64)).sum()
    if dh is not None:
        loss = loss + (torch.view_as_real(h).double() * torch.view_as_real(dh.to(DEVICE)).double()).sum()
    loss.backward()
    return [y, h, xs.grad, None if hs is None else hs.grad] + [p.grad for p in leaves]


def check_cema_grads(batch, length, dim, ndim, segments, carried, loss_on, dtype, seed, reference=cema_sequential):
    """dy is rounded to x's dtype first, so that the reference's gradients start from what the kernel reads."""
    gen = torch.Generator().manual_seed(seed)
    params = cema_params(dim, ndim, gen)
    x = torch.randn(batch, length, dim, generator=gen).to(dtype)
    h0 = torch.randn(batch, dim, ndim, dtype=torch.complex64, generator=gen) if carried else None
    dy = torch.randn(batch, length, dim, generator=gen).to(dtype) if loss_on in ("y", "both") else None
    dh = torch.randn(batch, dim, ndim, dtype=torch.complex64, generator=gen) if loss_on in ("h", "both") else None

    ref = cema_grads(reference, params, x, h0, dy, dh, torch.float64)
    triton_fn = lambda x, c, h: cema_triton_autograd(x, c, h, segments=segments)
    out = cema_grads(triton_fn, params, x, h0, dy, dh, torch.float32)
    assert out[0].dtype == dtype and out[2].dtype == dtype and out[1].dtype == torch.complex64
    for name, got, want in zip(NAMES, out, ref, strict=True):
        if want is None:  # no path to the loss (h0 not carried; gamma and omega with the loss on h only)
            assert got is None or not got.any(), name
            continue
        tol = TOL[dtype] if name in ("y", "x") else TOL[torch.float32]
        err = rel_err(got, want)
        assert err < tol, f"{name}: relative error {err:.2e} >= {tol:.0e}"


GRAD_CASES = [  # batch, length, dim, ndim, segments, carried h0, loss on (y, h or both), x dtype
    (2, 37, 40, 4, 3, True, "both", torch.float32),  # segments of 13, 13, 11; a partial feature block
    (1, 50, 32, 8, 4, False, "y", torch.float32),  # fresh state, no gradient on the final state (training)
    (3, 9, 32, 4, 9, True, "h", torch.float32),  # one-token segments; only the final state is used
    (1, 20, 32, 16, 1, True, "both", torch.float32),  # one segment: no chains
    (2, 45, 32, 16, 3, False, "both", torch.bfloat16),
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_cema_grads_match_reference(case):
    check_cema_grads(*case, seed=seed_for(case[:5]))


def test_autograd_forward_is_the_inference_scan():
    """The autograd node's forward runs the same launches and chain as `cema_triton`: bit-identical."""
    gen = torch.Generator().manual_seed(2)
    coeffs = cema_coefficients(*(p.to(DEVICE) for p in cema_params(40, 4, gen)))
    x = torch.randn(2, 37, 40, generator=gen).to(DEVICE)
    h0 = torch.randn(2, 40, 4, dtype=torch.complex64, generator=gen).to(DEVICE)
    y, h = cema_triton_autograd(x.requires_grad_(), coeffs, h0, segments=3)
    with torch.no_grad():
        y_inference, h_inference = cema_triton(x, coeffs, h0, segments=3)
    assert y.grad_fn is not None
    assert torch.equal(y, y_inference) and torch.equal(h, h_inference)


# -- dispatch --------------------------------------------------------------------------------


def spy_on_kernels(monkeypatch) -> list[str]:
    """Records which of the Triton entry points `cema` calls (it imports them from the module per call)."""
    calls = []
    for name in ("cema_triton", "cema_triton_autograd"):
        original = getattr(cema_triton_module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cema_triton_module, name, spy)
    return calls


def small_inputs(device):
    gen = torch.Generator().manual_seed(4)
    params = [p.to(device).requires_grad_() for p in cema_params(32, 4, gen)]
    x = torch.randn(2, 8, 32, generator=gen).to(device).requires_grad_()
    return x, cema_coefficients(*params)


def test_cema_keeps_the_reference_on_cpu(monkeypatch):
    """CPU tensors run `cema_chunked`, gradient or not, even with the Triton kernels selected."""
    with backend("auto"):
        calls = spy_on_kernels(monkeypatch)
        x, coeffs = small_inputs("cpu")
        y, h = cema(x, coeffs)
        y_ref, h_ref = cema_chunked(x, coeffs)
        assert torch.equal(y, y_ref) and torch.equal(h, h_ref)
        with torch.no_grad():
            cema(x, coeffs)
        assert calls == []


def test_cema_dispatch_branches(monkeypatch):
    """Where the Triton kernels are allowed: the autograd node while a gradient is recorded, the
    inference scan without. (Allowed here by patching the check, so that the interpreter runs them.)"""
    monkeypatch.setattr(cema_module, "use_triton_autograd", lambda x: True)
    monkeypatch.setattr(cema_module, "use_triton", lambda x: not torch.is_grad_enabled())
    calls = spy_on_kernels(monkeypatch)
    x, coeffs = small_inputs(DEVICE)
    y, _ = cema(x, coeffs)
    assert calls == ["cema_triton_autograd"] and type(y.grad_fn).__name__ == "_CemaScanBackward"
    with torch.no_grad():
        y, _ = cema(x, coeffs)
    assert calls == ["cema_triton_autograd", "cema_triton"] and y.grad_fn is None


@pytest.mark.gpu
@needs_cuda
def test_cema_dispatch_on_cuda(monkeypatch):
    calls = spy_on_kernels(monkeypatch)
    x, coeffs = small_inputs(DEVICE)
    cema(x, coeffs)  # the "reference" backend (the module's fixture)
    assert calls == []
    with backend("auto"):
        y, _ = cema(x, coeffs)
        assert calls == ["cema_triton_autograd"] and type(y.grad_fn).__name__ == "_CemaScanBackward"
        with torch.no_grad():
            cema(x, coeffs)
        assert calls == ["cema_triton_autograd", "cema_triton"]


# -- larger shapes on the GPU ----------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "case",
    [
        (8, 16384, 384, 16, None, False, "y", torch.bfloat16),  # the mini's training step, per layer
        (1, 4097, 4096, 16, None, True, "both", torch.float32),  # a 7B chunk, carried state
    ],
)
def test_cema_grads_large_shapes(case):
    check_cema_grads(*case, seed=case[1], reference=cema_chunked)


# -- CEMA ------------------------------------------------------------------------------------

CEMA_SHAPES = [  # batch, length, dim, ndim, segments (None: the kernel's choice)
    (1, 1, 32, 4, None),
    (2, 37, 40, 4, None),
    (3, 50, 33, 8, 4),
    (1, 129, 64, 16, 3),
    (2, 200, 32, 2, None),
]


def check_cema(batch, length, dim, ndim, segments, dtype, seed, carried=True):
    gen = torch.Generator().manual_seed(seed)
    params = cema_params(dim, ndim, gen)
    x = torch.randn(batch, length, dim, generator=gen).to(dtype)
    h0 = torch.randn(batch, dim, ndim, dtype=torch.complex64, generator=gen) if carried else None
    y_ref, h_ref = cema_sequential(
        x.to(DEVICE, torch.float64),
        cema_coefficients(*(p.to(DEVICE, torch.float64) for p in params)),
        None if h0 is None else h0.to(DEVICE, torch.complex128),
    )
    coeffs = cema_coefficients(*(p.to(DEVICE) for p in params))
    y, h = cema_triton(x.to(DEVICE), coeffs, None if h0 is None else h0.to(DEVICE), segments=segments)
    assert y.dtype == dtype and y.shape == x.shape and h.dtype == torch.complex64
    assert rel_err(y, y_ref) < TOL[dtype]
    assert rel_err(h, h_ref) < TOL[torch.float32]


@pytest.mark.parametrize("shape", CEMA_SHAPES)
def test_cema_matches_reference(shape):
    check_cema(*shape, torch.float32, seed=seed_for(shape))


def test_cema_bf16_and_fresh_state():
    check_cema(2, 45, 32, 16, 3, torch.bfloat16, seed=1, carried=False)


def test_cema_step_matches_reference():
    gen = torch.Generator().manual_seed(7)
    params = cema_params(48, 8, gen)
    coeffs = cema_coefficients(*params)
    x = torch.randn(3, 48, generator=gen)
    h = torch.randn(3, 48, 8, dtype=torch.complex64, generator=gen)
    y_ref, h_ref = cema_step(x.double(), cema_coefficients(*(p.double() for p in params)), h.to(torch.complex128))
    y, h_new = cema_step_triton(x.to(DEVICE), _coeffs_to(coeffs, DEVICE), h.to(DEVICE))
    assert rel_err(y, y_ref) < TOL[torch.float32] and rel_err(h_new, h_ref) < TOL[torch.float32]


def _coeffs_to(coeffs, device):
    return type(coeffs)(*(t.to(device) for t in (coeffs.p, coeffs.log_q, coeffs.g, coeffs.omega)))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,length", [(1, 4096), (2, 1000), (1, 4097)])
def test_cema_7b_shapes(batch, length):
    check_cema(batch, length, 4096, 16, None, torch.bfloat16, seed=length)
    check_cema(batch, length, 4096, 16, None, torch.float32, seed=length + 1)
