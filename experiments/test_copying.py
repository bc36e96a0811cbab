"""Research runs on the copying skill: minutes of CPU training each, so `slow` (run: pytest -m slow experiments)."""

import numpy as np
import pytest

from megadoc.training.loop import train
from tests.helpers import logged_losses, tiny_recipe

pytestmark = pytest.mark.slow


def test_repeat_windows_teach_a_tiny_model_to_copy(tmp_path):
    """Random ids cannot be predicted except by copying: the repeat loss falls well below ln(V)
    once the q/k scales learn fast enough to sharpen attention (at the base rate they barely move)."""
    (tmp_path / "tokens").mkdir()
    np.save(tmp_path / "tokens" / "shard000.npy", np.random.default_rng(0).integers(0, 32, 200_000).astype(np.uint16))
    run = tiny_recipe(
        tmp_path,
        tmp_path / "tokens",
        model={"preset": "tiny", "vocab_size": 32, "chunk_size": 64},
        seq_len=128,
        batch_size=16,
        steps=600,
        lr=3e-3,
        warmup_steps=20,
        repeat_fraction=1.0,
        attention_scale_lr=30.0,
        log_every=20,
        save_every=600,
    )
    train(run)
    logged = logged_losses(tmp_path / "run")
    assert logged[0] > 3.2  # about ln(32) = 3.47: nothing to go on yet
    assert np.mean(logged[-3:]) < 0.8 * np.log(32), logged


def test_signed_attention_scales_let_a_fresh_model_learn_to_copy_where_the_spec_init_does_not(tmp_path):
    """Random ids can only be predicted by copying. At the same steps and base rates, q/k scale
    products of both signs learn it; products all 1 (the spec's init) stay near ln(V)."""
    (tmp_path / "tokens").mkdir()
    np.save(tmp_path / "tokens" / "shard000.npy", np.random.default_rng(0).integers(0, 64, 200_000).astype(np.uint16))
    final = {}
    for signed in (0.0, 3.0):
        run = tiny_recipe(
            tmp_path / str(signed),
            tmp_path / "tokens",
            seq_len=128,
            batch_size=16,
            steps=400,
            lr=3e-3,
            warmup_steps=20,
            repeat_fraction=1.0,
            signed_attention_scales=signed,
            log_every=20,
            save_every=400,
            model={
                "preset": "tiny",
                "vocab_size": 64,
                "chunk_size": 64,
                "num_heads": 1,
                "model_dim": 64,
                "z_dim": 32,
                "value_dim": 128,
            },
        )
        train(run)
        final[signed] = np.mean(logged_losses(tmp_path / str(signed) / "run")[-3:])
    assert final[0.0] > 0.85 * np.log(64), final  # 3.87 measured: barely moving
    assert final[3.0] < 0.6 * np.log(64), final  # 1.82 measured
