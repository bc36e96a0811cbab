"""Complex exponential moving average (CEMA) over a span of tokens, with carried hidden state.

Per feature d and EMA component n (complex, float32):
    h_t = q * h_{t-1} + p * x_t
    y_t = Re(sum_n g_n h_{t,n}) + omega * x_t

Three forms of the same function, as in flash-linear-attention's layout:
- `cema_sequential`: the recurrence written out, one token at a time (tests' ground truth).
- `cema_chunked`: a blocked scan (intra-block Toeplitz products, a short sequential pass over block
  boundaries) that runs fast on CPU and is the reference the Triton kernels must equal, gradients
  (its autograd) included.
- `cema_step`: one decoding step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CemaCoefficients:
    """The recurrence's coefficients, computed once per call from the stored parameters."""

    p: torch.Tensor  # [D, N] real: input gain sigmoid(alpha)
    log_q: torch.Tensor  # [D, N] complex: log of the decay q = (1 - p * sigmoid(delta)) * e^(i phase)
    g: torch.Tensor  # [D, N] complex: output projection
    omega: torch.Tensor  # [D] real: skip weight

    @property
    def q(self) -> torch.Tensor:
        return torch.exp(self.log_q)


def cema_coefficients(
    alpha: torch.Tensor, delta: torch.Tensor, theta: torch.Tensor, gamma: torch.Tensor, omega: torch.Tensor
) -> CemaCoefficients:
    """Coefficients from the reference's parameters: alpha, delta [D,N,1], theta [D,1,1], gamma [D,N,2],
    omega [D,1]. Always float32 (float64 if the parameters are float64)."""
    dtype = torch.float64 if alpha.dtype == torch.float64 else torch.float32
    alpha, delta, theta, gamma, omega = (t.to(dtype) for t in (alpha, delta, theta, gamma, omega))
    ndim = alpha.shape[1]
    p = torch.sigmoid(alpha.squeeze(-1))
    magnitude = 1.0 - p * torch.sigmoid(delta.squeeze(-1))
    wavelets = torch.arange(1, ndim + 1, dtype=dtype, device=alpha.device)
    phase = torch.sigmoid(theta.squeeze(-1)) * (2 * math.pi / ndim) * wavelets  # [D, N]
    log_q = torch.complex(torch.log(magnitude), phase)
    g = torch.complex(gamma[..., 0], gamma[..., 1]) * math.sqrt(1.0 / ndim)
    return CemaCoefficients(p=p, log_q=log_q, g=g, omega=omega.reshape(-1))


def cema_sequential(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence one token at a time. x [B, L, D] -> (y [B, L, D], h [B, D, N] complex)."""
    batch, length, dim = x.shape
    real = coeffs.p.dtype
    if h is None:
        h = torch.zeros(batch, dim, coeffs.p.shape[1], dtype=coeffs.g.dtype, device=x.device)
    q = coeffs.q
    xs = x.to(real)
    ys = []
    for t in range(length):
        h = q * h + coeffs.p * xs[:, t, :, None]
        ys.append((coeffs.g * h).real.sum(-1) + coeffs.omega * xs[:, t])
    y = torch.stack(ys, dim=1) if ys else xs.clone()
    return y.to(x.dtype), h


def cema_step(x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. x [B, D] -> (y [B, D], new h [B, D, N])."""
    xs = x.to(coeffs.p.dtype)
    h = coeffs.q * h + coeffs.p * xs[..., None]
    y = (coeffs.g * h).real.sum(-1) + coeffs.omega * xs
    return y.to(x.dtype), h


def _powers(log_q: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """q ** k for each k in `exponents`: [D, N, K] complex."""
    return torch.exp(log_q[..., None] * exponents.to(log_q.real.dtype))


def _scan_blocks(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, nb*block, D] in float32 -> (y, h after the last block).

    Works feature-major ([B, D, blocks, K]), so that each product is one batched GEMM over
    contiguous operands: token-major einsums made the CPU multiply one feature at a time."""
    batch, length, dim = x.shape
    nblocks, ndim = length // block, coeffs.p.shape[1]
    xd = x.transpose(1, 2).reshape(batch, dim, nblocks, block)  # [B, D, C, K]
    powers = _powers(coeffs.log_q, torch.arange(block + 1, device=x.device))  # q^0 .. q^K: [D, N, K+1]

    # Intra-block causal convolution with kernel w[k] = Re(sum_n g p q^k), as a Toeplitz product.
    kernel = ((coeffs.g * coeffs.p)[..., None] * powers[..., :block]).real.sum(1)  # [D, K]
    steps = torch.arange(block, device=x.device)
    lag = steps[None, :] - steps[:, None]  # [j, t]: t - j
    y = xd @ (kernel[:, lag.clamp(min=0)] * (lag >= 0))  # [B, D, C, K]

    # Each block's contribution to the state at its end, starting from zero: p * sum_j q^(K-1-j) x_j.
    decay_to_end = coeffs.p[..., None] * powers[..., :block].flip(-1)  # [D, N, K]
    ends = xd @ torch.cat([decay_to_end.real, decay_to_end.imag], 1).transpose(1, 2)  # [B, D, C, 2N]
    local_end = torch.complex(ends[..., :ndim], ends[..., ndim:])

    # The state entering each block: a short sequential pass over block boundaries.
    # (`unbind`, not `local_end[:, :, n]`: each select's backward writes a whole zero-filled gradient.)
    q_block = powers[..., block]
    entering = []
    for block_end in local_end.unbind(2):
        entering.append(h)
        h = q_block * h + block_end
    if nblocks:
        # What the entering state adds at step t of its block: Re(sum_n g q^(t+1) h_in).
        carry = coeffs.g[..., None] * powers[..., 1:]  # [D, N, K]
        h_in = torch.stack(entering, dim=2)  # [B, D, C, N]
        y = y + torch.cat([h_in.real, h_in.imag], -1) @ torch.cat([carry.real, -carry.imag], 1)
    y = y + coeffs.omega[:, None, None] * xd
    return y.reshape(batch, dim, length).transpose(1, 2), h


def cema_chunked(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None, block: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocked scan. x [B, L, D] -> (y [B, L, D] in x's dtype, h [B, D, N] complex float32)."""
    batch, length, dim = x.shape
    if h is None:
        h = torch.zeros(batch, dim, coeffs.p.shape[1], dtype=coeffs.g.dtype, device=x.device)
    xs = x.to(coeffs.p.dtype)
    full = length - length % block
    pieces = []
    if full:
        y_full, h = _scan_blocks(xs[:, :full], coeffs, h, block)
        pieces.append(y_full)
    if length > full:
        y_rest, h = _scan_blocks(xs[:, full:], coeffs, h, length - full)
        pieces.append(y_rest)
    y = torch.cat(pieces, dim=1) if pieces else xs
    return y.to(x.dtype), h
