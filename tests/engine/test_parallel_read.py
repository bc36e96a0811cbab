"""Sequence-parallel reading (engine/parallel.py) on the CPU: three gloo processes read one document
and end with the state one process reaches, with the same logits, for ragged and even splits and
from a fresh state or one already part-way through a document."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megadoc.engine import Megalodon, MegalodonConfig
from megadoc.engine.parallel import chunk_split, merge_stats, read_across_ranks
from megadoc.kernels.timestep_norm import NormStats

WORLD = 3
CONFIG = MegalodonConfig.preset("tiny")
CHUNK = CONFIG.chunk_size
# (tokens already read before, tokens to read, chunks per rank or None for the even split)
CASES = [(0, 7 * CHUNK + 5, [1, 4, 2]), (2 * CHUNK, 6 * CHUNK, None)]


def tiny_model() -> Megalodon:
    torch.manual_seed(0)
    model = Megalodon(CONFIG).eval()
    with torch.no_grad():  # a non-zero CEMA state and norm weights, so every carried part matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def document(length: int) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model = tiny_model()
    results = []
    for before, length, split in CASES:
        state = model.new_state(2)
        if before:
            model.read(document(before), state)
        tail, logits = read_across_ranks(model, document(length), state, chunks_per_rank=split, compute_logits=True)
        results.append({"state": state.tensors(), "position": state.position, "tail": tail, "logits": logits})
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks_results(tmp_path_factory) -> list[list[dict]]:
    out = tmp_path_factory.mktemp("parallel")
    port = 29500 + os.getpid() % 1000
    mp.spawn(_worker, args=(port, str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_rank_ends_with_the_single_process_state(ranks_results, case):
    before, length, _ = CASES[case]
    model = tiny_model()
    state = model.new_state(2)
    if before:
        model.read(document(before), state)
    tail = model.read(document(length), state)
    for rank in range(WORLD):
        got = ranks_results[rank][case]
        assert got["position"] == state.position
        assert torch.equal(got["tail"], tail)
        for name, expected in state.tensors().items():
            assert got["state"][name].shape == expected.shape, name
            assert torch.allclose(got["state"][name].double(), expected.double(), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_ranks_logits_are_the_single_process_logits(ranks_results, case):
    before, length, _ = CASES[case]
    model = tiny_model()
    state = model.new_state(2)
    if before:
        model.read(document(before), state)
    body = document(length)[:, : length // CHUNK * CHUNK]
    with torch.no_grad():
        expected = model(body, state)
    got = torch.cat([ranks_results[rank][case]["logits"] for rank in range(WORLD)], 1)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() / expected.abs().max() < 1e-4


def test_chunk_split_is_even_and_whole():
    assert chunk_split(7, 3) == [3, 2, 2]
    assert chunk_split(6, 3) == [2, 2, 2]


def test_merged_statistics_are_those_of_the_joined_tokens():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 40, 4, generator=gen) * 2 + 1, torch.randn(2, 25, 4, generator=gen) - 3

    def stats(x: torch.Tensor) -> NormStats:
        return NormStats(torch.full((2,), x.shape[1]), x.mean(1), x.var(1, unbiased=False))

    merged = merge_stats(stats(a), stats(b))
    joined = stats(torch.cat([a, b], 1))
    assert torch.equal(merged.count, joined.count)
    assert torch.allclose(merged.mean, joined.mean, atol=1e-6) and torch.allclose(merged.var, joined.var, atol=1e-5)
    empty = NormStats(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4), torch.ones(2, 4))
    alone = merge_stats(empty, stats(a))
    assert torch.allclose(alone.mean, stats(a).mean) and torch.allclose(alone.var, stats(a).var)


def test_the_norm_refresh_is_refused():
    model = Megalodon(MegalodonConfig.preset("tiny").replace(norm_refresh_after=2))
    with pytest.raises(ValueError, match="norm refresh"):
        read_across_ranks(model, document(4 * CHUNK), model.new_state(2))
