"""CPU speed of a shipped model: `python -m benchmarks.cpu_speed [--model mini]`.

Reading (streaming prefill through `model.read`, no logits) and generating (greedy, one token per
step) tokens per second, on random ids, with torch using the cores this process may run on. Run it
under `taskset -c 0,1` for the 2-core figure the model card reports."""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from megadoc.engine import GenerationConfig, Megalodon


def measure(model: Megalodon, read_tokens: int, new_tokens: int, repeats: int) -> tuple[float, float]:
    """Median reading and generating tokens/s over `repeats` runs (after one warm-up)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (read_tokens,), generator=generator)
    reads, generations = [], []
    for attempt in range(repeats + 1):
        state = model.new_state()
        start = time.perf_counter()
        tail = model.read(ids, state)
        reads.append(read_tokens / (time.perf_counter() - start))
        config = GenerationConfig(max_new_tokens=new_tokens)
        start = time.perf_counter()
        produced = sum(1 for _ in model.generate(tail[0] if tail.numel() else ids[-1:], state, config))
        generations.append(produced / (time.perf_counter() - start))
        if attempt == 0:
            reads, generations = [], []
    return sorted(reads)[len(reads) // 2], sorted(generations)[len(generations) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini")
    parser.add_argument("--read-tokens", type=int, default=16384)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    model = Megalodon.from_pretrained(args.model, device="cpu")
    reading, generating = measure(model, args.read_tokens, args.new_tokens, args.repeats)
    print("| model | parameters | CPU | cores | reading tokens/s | generating tokens/s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {model.num_parameters():,} | {platform.processor() or platform.machine()} | {cores} "
        f"| {reading:,.0f} | {generating:,.1f} |"
    )


if __name__ == "__main__":
    main()
