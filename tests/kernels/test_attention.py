"""Attention's Triton kernels (kernels/attention/triton.py) against their references: the forward,
the decoding step and cache write, the fused q/k, and the backward (`chunk_attention_autograd`)
against autograd through the reference `chunk_attention`.

Without a GPU the kernels run under triton's interpreter on small shapes, against the reference in
float64. The interpreter rounds float32 to bf16 by truncation (the GPU rounds to nearest), which
doubles the error of every bf16 rounding here: the bf16 tolerance allows for it. With a GPU the tests
marked `gpu` add the mini's training shape and the 7B's head dims, against the reference in float32.
"""

import pytest
import torch

pytest.importorskip("triton")

from megadoc.kernels import (
    attention,  # noqa: E402
    backend,  # noqa: E402
)
from megadoc.kernels.attention import (  # noqa: E402
    chunk_attention,  # noqa: E402
    decode_attention,  # noqa: E402
    normalized_qk,
    rotation,
    write_slot,
)
from megadoc.kernels.attention.triton import (  # noqa: E402  # noqa: E402  # noqa: E402
    chunk_attention_autograd,
    chunk_attention_sdpa,
    chunk_attention_triton,
    decode_attention_triton,
    normalized_qk_triton,
    write_slot_triton,
)
from tests.helpers import DEVICE, TOL, needs_cuda, rel_err, seed_for  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_kernels")

# float32: measured ~1e-6 on the CPU. bf16 and fp16: a few roundings to 8 (11) significant bits of P,
# dS and the outputs; measured up to 1.0e-2 (5e-4) under the interpreter with peaked softmaxes.
BACKWARD_TOL = {torch.float32: 3e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
FUNCTION = "_ChunkAttentionBackward"  # the grad_fn of `chunk_attention_autograd`'s output


def random_inputs(batch, tq, tk, heads, dk, dv, dtype, seed, scaled=True):
    """q, k, v and an output gradient; `scaled` folds 1/sqrt(dk) into q as the model does (else the
    scores spread over several units and the softmax is peaked)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, tq, heads, dk, generator=gen) * (dk**-0.5 if scaled else 1.0)
    k = torch.randn(batch, tk, heads, dk, generator=gen)
    v = torch.randn(batch, tk, heads, dv, generator=gen)
    grad = torch.randn(batch, tq, heads, dv, generator=gen)
    return tuple(t.to(DEVICE, dtype) for t in (q, k, v, grad))


def output_and_grads(fn, q, k, v, grad, **blocks):
    """fn's output for leaves copied from q, k, v, and their gradients for the output gradient `grad`."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, **blocks)
    out.backward(grad)
    return out, *(t.grad for t in leaves)


def check_backward(batch, tq, tk, heads, dk, dv, dtype, seed, scaled=True, **blocks):
    """The Function's output and gradients against the reference's in float64."""
    q, k, v, grad = random_inputs(batch, tq, tk, heads, dk, dv, dtype, seed, scaled)
    ref = output_and_grads(chunk_attention, *(t.double() for t in (q, k, v, grad)))
    got = output_and_grads(chunk_attention_autograd, q, k, v, grad, **blocks)
    for name, g, r, t in zip(("out", "dq", "dk", "dv"), got, ref, (v, q, k, v), strict=True):
        assert g.dtype == t.dtype and g.shape == r.shape, name
        assert rel_err(g, r) < BACKWARD_TOL[dtype], name


GRAD_SHAPES = [  # batch, queries, keys, heads, dk, dv
    (1, 1, 20, 1, 8, 16),  # one query over a cache
    (2, 37, 37, 2, 16, 48),  # Tq == Tk, not multiples of the blocks
    (1, 5, 40, 2, 16, 64),  # Tq < Tk: the causal mask's lower-right corner
    (2, 33, 50, 1, 32, 40),  # both ragged, dv not a multiple of the value slice
]


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_backward_matches_reference(shape):
    check_backward(*shape, torch.float32, seed=seed_for(shape), scaled=False)


@pytest.mark.parametrize(
    "blocks",
    [
        {"block_m": 32, "block_n": 16},
        {"block_m": 16, "block_n": 32, "block_dv": 16, "block_dp": 16},
    ],
)
def test_backward_other_tiles(blocks):
    """Query and key blocks of different sizes (where a key block's first query block starts) and
    value slices and chunks that leave a ragged tail of dv."""
    check_backward(2, 33, 50, 2, 16, 40, torch.float32, seed=3, scaled=False, **blocks)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_low_precision(dtype):
    check_backward(2, 33, 45, 2, 16, 48, dtype, seed=5)


def test_backward_non_contiguous():
    """q and k as views of one packed projection (strided rows, Tq < Tk), v with a non-unit last
    stride, and a broadcast output gradient (stride 0), like those autograd can hand over."""
    gen = torch.Generator().manual_seed(6)
    packed = torch.randn(2, 40, 2, 32, generator=gen).to(DEVICE)
    v_t = torch.randn(2, 40, 24, 2, generator=gen).to(DEVICE)
    grad = torch.randn(1, 30, 2, 24, generator=gen).to(DEVICE).expand(2, -1, -1, -1)

    def run(fn, packed, v_t, grad):
        packed, v_t = packed.clone().requires_grad_(), v_t.clone().requires_grad_()
        out = fn(packed[:, 10:, :, :16], packed[:, :, :, 16:], v_t.transpose(-1, -2))
        out.backward(grad)
        return out, packed.grad, v_t.grad

    got = run(chunk_attention_autograd, packed, v_t, grad)
    ref = run(chunk_attention, packed.double(), v_t.double(), grad.double())
    for g, r in zip(got, ref, strict=True):
        assert rel_err(g, r) < BACKWARD_TOL[torch.float32]


def test_forward_unchanged_and_lse():
    """The Function's forward is the inference kernel's output bit for bit, and the log-sum-exp it
    keeps is that of the causal scores."""
    q, k, v, _ = random_inputs(2, 21, 30, 2, 16, 24, torch.float32, seed=7, scaled=False)
    out = chunk_attention_autograd(q.requires_grad_(), k, v)
    assert out.grad_fn.name() == FUNCTION
    assert torch.equal(out, chunk_attention_triton(q, k, v))
    lse = out.grad_fn.saved_tensors[-1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double())
    scores = scores.masked_fill(torch.ones(21, 30, dtype=torch.bool, device=DEVICE).triu(30 - 21 + 1), float("-inf"))
    assert rel_err(lse, scores.logsumexp(-1).flatten(0, 1)) < 1e-6


def test_dispatch(monkeypatch):
    """CPU tensors keep the differentiable reference. With dispatch answering as on CUDA, recording a
    gradient runs the Function (the same gradients), and no_grad the inference kernel."""
    q, k, v, grad = (t.cpu() for t in random_inputs(1, 9, 20, 2, 16, 24, torch.float32, seed=8))
    out = chunk_attention(q.requires_grad_(), k, v)
    assert out.grad_fn is not None and out.grad_fn.name() != FUNCTION

    # The kernels then run where the kernel tests run them: the interpreter on CPU, else CUDA.
    q, k, v, grad = (t.detach().to(DEVICE) for t in (q, k, v, grad))
    monkeypatch.setattr(attention, "use_triton_autograd", lambda x: True)
    monkeypatch.setattr(attention, "use_triton", lambda x: not torch.is_grad_enabled())
    got = output_and_grads(chunk_attention, q, k, v, grad)
    assert got[0].grad_fn.name() == FUNCTION
    ref = output_and_grads(chunk_attention_autograd, q, k, v, grad)
    for g, r in zip(got, ref, strict=True):
        assert torch.equal(g, r)
    with torch.no_grad():
        out = chunk_attention(q, k, v)
    assert out.grad_fn is None and torch.equal(out, chunk_attention_triton(q, k, v))


def test_model_backward_through_the_function(monkeypatch):
    """The tiny model's parameter gradients with its attention through the Function (whole chunks
    folded into the batch, a ragged tail) equal those through the reference."""
    from megadoc.engine import Megalodon, MegalodonConfig

    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny")).to(DEVICE)
    ids = torch.randint(0, model.config.vocab_size, (2, 40), device=DEVICE)

    def grads() -> torch.Tensor:
        model.zero_grad()
        model(ids, model.new_state(2)).square().mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    ref = grads()
    monkeypatch.setattr(attention, "use_triton_autograd", lambda x: True)
    assert rel_err(grads(), ref) < 1e-4


# -- larger shapes on the GPU ----------------------------------------------------------------


def check_against_float32(batch, tq, tk, heads, dk, dv, seed):
    """bf16 inputs: the Triton gradients against the float32 reference's, within the bf16 tolerance
    and no further off than the bf16 reference's (the autograd that training ran before)."""
    q, k, v, grad = random_inputs(batch, tq, tk, heads, dk, dv, torch.bfloat16, seed)
    ref = output_and_grads(chunk_attention, *(t.float() for t in (q, k, v, grad)))
    low = output_and_grads(chunk_attention, q, k, v, grad)
    got = output_and_grads(chunk_attention_autograd, q, k, v, grad)
    for name, g, lo, r in zip(("out", "dq", "dk", "dv"), got, low, ref, strict=True):
        err = rel_err(g, r)
        assert err < BACKWARD_TOL[torch.bfloat16], name
        assert err < 1.5 * rel_err(lo, r), name


@pytest.mark.gpu
@needs_cuda
def test_backward_mini_training_shape():
    """Training's call: 8 rows of 16 chunks folded into the batch, 2 heads, dk 64, dv 384."""
    check_against_float32(128, 1024, 1024, 2, 64, 384, seed=0)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,tq,tk", [(2, 2048, 2048), (1, 300, 3000)])
def test_backward_7b_head_dims(batch, tq, tk):
    check_against_float32(batch, tq, tk, 4, 256, 2048, seed=tq)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,tq,tk", [(4, 1024, 1024), (2, 100, 1000)])
def test_backward_float32_gpu(batch, tq, tk):
    check_backward(batch, tq, tk, 2, 64, 384, torch.float32, seed=tq, scaled=False)


@pytest.mark.gpu
@needs_cuda
def test_backward_memory():
    """At the mini's training shape the forward and backward together allocate about their output and
    gradients, the size of the inputs and output gradient (the reference's float32 scores alone are
    1 GiB, twice that)."""
    q, k, v, grad = random_inputs(128, 1024, 1024, 2, 64, 384, torch.bfloat16, seed=1)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    tensors = sum(t.numel() * t.element_size() for t in (q, k, v, grad))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    chunk_attention_autograd(q, k, v).backward(grad)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < 1.5 * tensors


@pytest.mark.gpu
@needs_cuda
def test_dispatch_cuda_and_autocast(monkeypatch):
    """On CUDA a recorded gradient runs the Function; under bf16 autocast float32 inputs are cast
    as the reference's einsums would be, and their gradients come back in float32."""
    q, k, v, grad = random_inputs(2, 100, 100, 2, 64, 384, torch.float32, seed=2)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with backend("auto"), torch.autocast("cuda", dtype=torch.bfloat16):
        out = chunk_attention(*leaves)
    assert out.grad_fn.name() == FUNCTION and out.dtype == torch.bfloat16
    out.backward(grad.bfloat16())
    ref = output_and_grads(chunk_attention, *(t.bfloat16().double() for t in (q, k, v, grad)))
    for g, r in zip([out, *(t.grad for t in leaves)], ref, strict=True):
        assert rel_err(g, r) < BACKWARD_TOL[torch.bfloat16]
    assert all(t.grad.dtype == torch.float32 for t in leaves)


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


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch,tq,tk", [(1, 4096, 4096), (2, 1000, 1000), (1, 300, 3000), (8, 1, 2049)])
def test_attention_7b_shapes(batch, tq, tk):
    check_attention(batch, tq, tk, 4, 256, 2048, torch.bfloat16, seed=tq)
    check_attention(batch, tq, tk, 4, 256, 2048, torch.bfloat16, seed=tq, fn=chunk_attention_sdpa)


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


QK_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


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
    assert rel_err(out, ref) < QK_TOL[dtype]


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
def test_normalized_qk_7b_shapes(rows):
    check_qk(1, rows, 4, 256, torch.bfloat16, seed=rows, start=4096 - rows)
