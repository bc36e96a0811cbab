"""Where a training step of `mini` spends its time: `python -m benchmarks.train_profile [ROWS] [BACKEND]`.

Random initial weights and random tokens, ROWS x 16,384 tokens (default 8), bf16 autocast, fused
AdamW, as training.loop runs. Prints the step time, tokens/s and peak memory over 5 steps after 3
warm-up steps, then torch.profiler's table of two steps. BACKEND `reference` times the
differentiable references instead of the Triton kernels (`auto`, the default). Needs CUDA.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from megadoc.engine import Megalodon, MegalodonConfig
from megadoc.kernels import backend

SEQ_LEN = 16384


def main(rows: int = 8) -> None:
    config = MegalodonConfig.preset("mini")
    model = Megalodon(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    tokens = torch.randint(0, config.vocab_size, (rows, SEQ_LEN + 1), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 5
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"step {seconds * 1e3:.0f} ms  {rows * SEQ_LEN / seconds:,.0f} tokens/s  peak {peak:.1f} GiB")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    with backend(sys.argv[2] if len(sys.argv) > 2 else "auto"):
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
