"""What the kernel tests share: the device they run on, the GPU-only mark, the relative error of
METHOD.md, and an autouse fixture that keeps the entry points on their references (on CUDA they would
dispatch to the Triton kernels being checked) in the modules that import it."""

import pytest
import torch

from megadoc.kernels.timestep_norm import NormStats

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative error allowed: a few roundings of float32 arithmetic; one rounding to bf16.
TOL = {torch.float32: 3e-5, torch.bfloat16: 1e-2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def references_everywhere(monkeypatch):
    """The reference functions dispatch to Triton on CUDA; here they must stay references."""
    monkeypatch.setenv("MEGADOC_KERNELS", "reference")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 on the CPU (complex tensors as their real pairs); out must be finite."""
    out, ref = (torch.view_as_real(t) if t.is_complex() else t for t in (out.detach().cpu(), ref.detach().cpu()))
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def cema_params(dim: int, ndim: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random CEMA parameters (alpha, delta, theta, gamma, omega) spread like the release's
    initialisation (gamma with an imaginary part)."""
    return (
        torch.randn(dim, ndim, 1, generator=gen) * 0.2,
        torch.randn(dim, ndim, 1, generator=gen) * 0.2,
        torch.randn(dim, 1, 1, generator=gen) * 2,
        torch.randn(dim, ndim, 2, generator=gen),
        torch.randn(dim, 1, generator=gen) * 0.25,
    )


def timestep_norm_inputs(
    batch: int,
    length: int,
    dim: int,
    groups: int,
    padding: bool,
    count: int,
    dtype: torch.dtype,
    gen: torch.Generator,
) -> tuple[torch.Tensor, NormStats, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, stats, weight, bias, padding mask) on DEVICE: x offset from zero (sums about a shift must not
    cancel), statistics fresh or carried (`count` tokens before the span, a different count per row)."""
    x = (torch.randn(batch, length, dim, generator=gen) * 3 + 5).to(dtype)
    if count:
        stats = NormStats(
            torch.full((batch,), count, dtype=torch.int64) + torch.arange(batch),
            torch.randn(batch, groups, generator=gen) + 5,
            torch.rand(batch, groups, generator=gen) + 8,
        )
    else:
        stats = NormStats(torch.zeros(batch, dtype=torch.int64), torch.zeros(batch, groups), torch.ones(batch, groups))
    weight, bias = torch.randn(dim, generator=gen) * 0.1, torch.randn(dim, generator=gen) * 0.1
    mask = torch.rand(batch, length, generator=gen) < 0.3 if padding else None
    stats = NormStats(stats.count.to(DEVICE), stats.mean.to(DEVICE), stats.var.to(DEVICE))
    return x.to(DEVICE), stats, weight.to(DEVICE), bias.to(DEVICE), None if mask is None else mask.to(DEVICE)
