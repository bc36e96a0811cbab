"""The CPU benchmark measures real reading and generation on a model (the tiny preset here)."""

import torch

from benchmarks.cpu_speed import measure
from megadoc.engine import Megalodon, MegalodonConfig


def test_measure_reads_and_generates():
    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny")).eval()
    reading, generating = measure(model, read_tokens=64, new_tokens=5, repeats=1)
    assert reading > 0 and generating > 0
