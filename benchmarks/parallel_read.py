"""Sequence-parallel reading's speed: `torchrun --nproc-per-node N -m benchmarks.parallel_read [PRESET] [TOKENS]`.

Random bf16 weights of PRESET (default 7b), one random document of TOKENS (default 1M) read once
by every rank together (engine/parallel.py), after one warm-up read of two chunks a rank. Rank 0
prints the world size, seconds, tokens/s and peak memory per GPU; run it at 1, 2, 4 and 8 GPUs
on one machine for the scaling curve. Needs CUDA (NCCL).
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist

from megadoc.engine import Megalodon, MegalodonConfig, read_across_ranks


def main(preset: str = "7b", tokens: int = 1 << 20) -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    torch.manual_seed(0)
    config = MegalodonConfig.preset(preset)
    with torch.device("cuda"):
        model = Megalodon(config).to(torch.bfloat16).eval()
    chunk = config.chunk_size
    ids = torch.randint(0, config.vocab_size, (1, tokens // chunk * chunk), device="cuda")
    read_across_ranks(model, ids[:, : 2 * world * chunk], model.new_state())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    start = time.perf_counter()
    read_across_ranks(model, ids, model.new_state())
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if rank == 0:
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{preset} {ids.shape[1]:,} tokens on {world} GPU(s): {seconds:.2f} s, "
              f"{ids.shape[1] / seconds:,.0f} tokens/s, peak {peak:.1f} GiB per GPU")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["7b"]), *(int(a) for a in sys.argv[2:3]))
