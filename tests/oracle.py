"""Where the authors' golden outputs live (../shared/oracle beside the checkout, or $MEGADOC_SHARED)."""

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("MEGADOC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ORACLE = SHARED / "oracle"
DATA = SHARED / "data"

needs_oracle = pytest.mark.skipif(not ORACLE.is_dir(), reason=f"the authors' golden outputs are not at {ORACLE}")


def rel_err(ours: torch.Tensor, golden: torch.Tensor) -> float:
    """||ours - golden|| / ||golden||, in float64."""
    ours, golden = ours.double(), golden.double()
    return ((ours - golden).norm() / golden.norm()).item()
