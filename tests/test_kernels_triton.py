"""The Triton kernels against their plain-PyTorch references, on fresh random inputs.

Without a GPU the kernels run under triton's interpreter (TRITON_INTERPRET=1, set by conftest.py
before anything imports triton) on CPU tensors and small shapes; with one they run compiled, and the tests
marked `gpu` add the 7B's shapes and the model end to end. References are computed in float64
on the same device, under the "reference" backend so that the entry points run them on CUDA too.
"""

import pytest
import torch

pytest.importorskip("triton")

from megadoc.kernels import backend  # noqa: E402
from megadoc.kernels.attention import chunk_attention, decode_attention  # noqa: E402
from megadoc.kernels.attention.triton import (  # noqa: E402
    chunk_attention_sdpa,
    chunk_attention_triton,
    decode_attention_triton,
)
from megadoc.kernels.cema import cema_coefficients, cema_step  # noqa: E402
from megadoc.kernels.cema.reference import cema_sequential  # noqa: E402
from megadoc.kernels.cema.triton import cema_step_triton, cema_triton  # noqa: E402
from megadoc.kernels.timestep_norm import NormStats, timestep_norm, timestep_norm_step  # noqa: E402
from megadoc.kernels.timestep_norm.triton import timestep_norm_step_triton, timestep_norm_triton  # noqa: E402
from tests.helpers import DEVICE, TOL, cema_params, needs_cuda, rel_err, seed_for, timestep_norm_inputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_kernels")


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


# -- attention -------------------------------------------------------------------------------

ATTN_SHAPES = [  # batch, queries, keys, heads, dk, dv
    (1, 1, 1, 1, 8, 16),
    (2, 37, 37, 2, 8, 24),
    (1, 5, 40, 2, 16, 64),
    (2, 33, 50, 1, 32, 48),
    (1, 1, 70, 2, 8, 16),
]


def check_attention(batch, tq, tk, heads, dk, dv, dtype, seed, fn=chunk_attention_triton):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, tq, heads, dk, generator=gen).to(dtype)
    k = torch.randn(batch, tk, heads, dk, generator=gen).to(dtype)
    v = torch.randn(batch, tk, heads, dv, generator=gen).to(dtype)
    ref = chunk_attention(*(t.to(DEVICE, torch.float64) for t in (q, k, v)))
    out = fn(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE))
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("shape", ATTN_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_matches_reference(shape, dtype):
    check_attention(*shape, dtype, seed=seed_for(shape))


def test_attention_sdpa_wrapper():
    check_attention(2, 9, 30, 2, 16, 48, torch.float32, seed=4, fn=chunk_attention_sdpa)


DECODE_SHAPES = [  # batch, heads, slots C, dk, dv, keys per split (None: the kernel's choice)
    (1, 1, 16, 8, 16, None),
    (2, 2, 40, 16, 24, 16),
    (3, 2, 64, 32, 48, 24),  # splits that are not whole key blocks
    (1, 2, 50, 16, 40, 50),  # one split
]


def check_decode_attention(batch, heads, slots, dk, dv, split_len, last, dtype, seed, **blocks):
    """The kernel reads only the slots 0..last: the others are NaN for it and zeros for the reference."""
    gen = torch.Generator().manual_seed(seed)
    q = (torch.randn(batch, 1, heads, dk, generator=gen) * dk**-0.5).to(dtype).to(DEVICE)
    k = torch.randn(batch, heads, slots, dk, generator=gen).to(dtype).to(DEVICE)
    v = torch.randn(batch, heads, slots, dv, generator=gen).to(dtype).to(DEVICE)
    k[:, :, last + 1 :], v[:, :, last + 1 :] = 0, 0
    index = torch.tensor([last], device=DEVICE)
    ref = decode_attention(q.double(), k.double(), v.double(), index)
    k[:, :, last + 1 :], v[:, :, last + 1 :] = torch.nan, torch.nan
    if split_len is not None:
        blocks["split_len"] = split_len
    out = decode_attention_triton(q, k, v, index, **blocks)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("shape", DECODE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_matches_reference(shape, dtype):
    slots = shape[2]
    for last in (0, slots // 2 - 1, slots - 1):
        check_decode_attention(*shape, last, dtype, seed=seed_for(shape) + last)


def test_decode_attention_reference_matches_chunk_attention():
    """The reference over slots 0..last is chunk attention of the last query over those keys."""
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(2, 1, 2, 16, generator=gen, dtype=torch.float64)
    k, v = torch.randn(2, 2, 30, 16, generator=gen, dtype=torch.float64), torch.randn(2, 2, 30, 24, generator=gen)
    out = decode_attention(q, k, v.double(), torch.tensor([20]))
    ref = chunk_attention(q, k[:, :, :21].transpose(1, 2), v[:, :, :21].double().transpose(1, 2))
    assert rel_err(out, ref) < 1e-12


# -- larger shapes on the GPU ----------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,length", [(1, 4096), (2, 1000), (1, 4097)])
def test_cema_7b_shapes(batch, length):
    check_cema(batch, length, 4096, 16, None, torch.bfloat16, seed=length)
    check_cema(batch, length, 4096, 16, None, torch.float32, seed=length + 1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,length,count", [(1, 4096, 0), (3, 1000, 1_000_000), (1, 4100, 37)])
def test_timestep_norm_7b_shapes(batch, length, count):
    check_norm(batch, length, 4096, 64, True, count, torch.bfloat16, seed=length)
    check_norm(batch, length, 4096, 64, False, count, torch.float32, seed=length + 1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,tq,tk", [(1, 4096, 4096), (2, 1000, 1000), (1, 300, 3000), (8, 1, 2049)])
def test_attention_7b_shapes(batch, tq, tk):
    check_attention(batch, tq, tk, 4, 256, 2048, torch.bfloat16, seed=tq)
    check_attention(batch, tq, tk, 4, 256, 2048, torch.bfloat16, seed=tq, fn=chunk_attention_sdpa)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 8])
def test_timestep_norm_step_7b_shapes(batch):
    check_norm_step(batch, 4096, 64, 1_000_000, torch.bfloat16, seed=batch)
    check_norm_step(batch, 4096, 64, 37, torch.float32, seed=batch + 1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("last", [0, 2047, 4095])
def test_decode_attention_7b_shapes(batch, last):
    check_decode_attention(batch, 4, 4096, 256, 2048, None, last, torch.bfloat16, seed=last)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("last", [0, 500, 1023])
def test_decode_attention_mini_shapes(batch, last):
    check_decode_attention(batch, 2, 1024, 64, 384, None, last, torch.bfloat16, seed=last)
    check_decode_attention(batch, 2, 1024, 64, 384, None, last, torch.float32, seed=last + 1)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_dispatch_matches_reference(monkeypatch, dtype):
    """The tiny model streamed in pieces on CUDA: Triton entry points == references."""
    from megadoc.engine import Megalodon, MegalodonConfig

    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny")).to(DEVICE, dtype)
    ids = torch.randint(0, model.config.vocab_size, (2, 70), device=DEVICE)

    def logits() -> torch.Tensor:
        state, out, start = model.new_state(2), [], 0
        for n in (5, 20, 1, 1, 43):  # inside a chunk, across boundaries, single tokens
            out.append(model(ids[:, start : start + n], state))
            start += n
        return torch.cat(out, 1)

    with torch.no_grad():
        ref = logits()
        with backend("auto"):
            out = logits()
    assert rel_err(out, ref) < (1e-4 if dtype == torch.float32 else 2e-2)
