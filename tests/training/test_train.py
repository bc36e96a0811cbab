"""Training on the CPU: the loss falls, a run resumes from its own checkpoint, export ships bf16 matrices."""

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megadoc.engine import Megalodon
from megadoc.training.batches import IGNORE, PretrainWindows, RepeatWindows, RowMix, TuneRows
from megadoc.training.export import export
from megadoc.training.loop import learning_rate, row_mean_loss, token_mean_loss, train
from megadoc.training.recipe import Recipe, model_config
from tests.helpers import logged_losses, tiny_recipe


@pytest.fixture
def token_dir(tmp_path):
    """A learnable stream: runs of 50 tokens, each the previous plus 3 (mod 64)."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 64, 400)
    stream = np.concatenate([(s + 3 * np.arange(50)) % 64 for s in starts]).astype(np.uint16)
    (tmp_path / "tokens").mkdir()
    np.save(tmp_path / "tokens" / "shard000.npy", stream)
    return tmp_path / "tokens"


def test_tiny_model_learns_and_resumes(tmp_path, token_dir):
    first = tiny_recipe(tmp_path, token_dir, steps=20)
    train(first)
    logged = logged_losses(tmp_path / "run")
    assert logged[-1] < 0.5 * logged[0]
    saved = torch.load(tmp_path / "run" / "checkpoint" / "trainer.pt", weights_only=True)
    assert saved["step"] == 20
    train(tiny_recipe(tmp_path, token_dir, steps=40))  # picks up at step 20
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]
    assert logged_losses(tmp_path / "run")[-1] < logged[-1]


def test_dropouts_act_in_training_only_and_a_saved_model_loads_for_reading(tmp_path, token_dir):
    dropping = {"preset": "tiny", "vocab_size": 64, "dropout": 0.2, "hidden_dropout": 0.2}
    checkpoint = train(tiny_recipe(tmp_path, token_dir, steps=20, model=dropping))
    assert logged_losses(tmp_path / "run")[-1] < 0.5 * logged_losses(tmp_path / "run")[0]  # it learns through the noise

    model = Megalodon.from_pretrained(checkpoint)
    assert not model.training and model.config.dropout == 0.2
    ids = torch.arange(40)[None] % 64
    reading = model(ids)
    torch.testing.assert_close(model(ids), reading)
    undropped = Megalodon(model.config.replace(dropout=0.0, hidden_dropout=0.0))
    undropped.load_state_dict(model.state_dict())
    torch.testing.assert_close(undropped.train()(ids), reading)  # dropout 0 in training: the same function

    model.train()
    first, second = model(ids), model(ids)
    assert not torch.allclose(first, second) and not torch.allclose(first, reading)
    hidden_only = Megalodon(model.config.replace(dropout=0.0))
    hidden_only.load_state_dict(model.state_dict())
    assert not torch.allclose(hidden_only.train()(ids), reading)  # hidden dropout alone drops too


def test_attention_scales_learn_at_their_own_rate(tmp_path, token_dir):
    """`attention_scale_lr` moves the q/k scales (zero at init) that many times farther, nothing else."""
    moved = {}
    for scale in (1.0, 10.0):
        checkpoint = train(
            tiny_recipe(tmp_path / str(scale), token_dir, steps=5, save_every=5, attention_scale_lr=scale)
        )
        model = Megalodon.from_pretrained(checkpoint)
        moved[scale] = (model.layers[0].mega.gamma.abs().mean().item(), model.layers[0].mega.wz.weight.clone())
    assert moved[10.0][0] > 5 * moved[1.0][0] > 0
    assert torch.allclose(moved[10.0][1], moved[1.0][1], atol=0.05)


def test_export_ships_bf16_matrices_and_loads_as_float32(tmp_path, token_dir, sp_model_path):
    checkpoint = train(tiny_recipe(tmp_path, token_dir, steps=5, save_every=5))
    export(checkpoint, tmp_path / "shipped", sp_model_path)
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "shipped" / "model.safetensors"))
    assert tensors["layers.0.mega.wv.weight"].dtype == torch.bfloat16
    assert tensors["layers.0.mega.cema.alpha"].dtype == torch.float32
    assert tensors["layers.0.mega.gamma"].dtype == torch.float32  # the attention's q/k scales
    model = Megalodon.from_pretrained(tmp_path / "shipped")
    assert model.dtype == torch.float32 and (tmp_path / "shipped" / "tokenizer.model").is_file()


def test_tune_rows_put_the_loss_on_answers_only(tmp_path):
    ids = np.arange(10, 40, dtype=np.uint16)  # two rows: [10..24) with answer from 20, [24..40) from 36
    np.savez(tmp_path / "t.npz", ids=ids, offsets=np.array([0, 14, 30]), answer_starts=np.array([10, 26]))
    rows = TuneRows(tmp_path / "t.npz", seq_len=20, pad_id=0, rng=np.random.default_rng(0), chunk_size=4)
    for _ in range(10):
        inputs, targets = rows.sample()
        assert inputs.shape == targets.shape == (20,)
        scored = targets[targets != IGNORE]
        assert set(scored.tolist()) <= {20, 21, 22, 23, 36, 37, 38, 39}
        assert len(scored) == 4


def test_long_tune_rows_lose_whole_chunks_from_their_start(tmp_path):
    ids = np.arange(100, 150, dtype=np.uint16)  # one row of 50 ids, the answer its last 3
    np.savez(tmp_path / "t.npz", ids=ids, offsets=np.array([0, 50]), answer_starts=np.array([47]))
    rows = TuneRows(tmp_path / "t.npz", seq_len=20, pad_id=0, rng=np.random.default_rng(0), chunk_size=8)
    inputs, targets = rows.sample()
    # 50 ids need 49 inputs: 32 (4 chunks) go, so every id keeps its place in its 8-token chunk.
    assert inputs[:17].tolist() == list(range(132, 149))
    assert inputs[17:].tolist() == [0, 0, 0]
    assert targets[targets != IGNORE].tolist() == [147, 148, 149]


def test_every_row_weighs_the_same_in_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    targets = torch.randint(0, 11, (3, 6))
    # Pretraining rows (every token scored): the plain token mean.
    plain = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert row_mean_loss(logits, targets).item() == pytest.approx(plain.item())
    # A tuning row scoring one answer token weighs as much as a row scoring six; rows scoring none are left out.
    targets[1, :5] = IGNORE
    targets[2, :] = IGNORE
    rows = [F.cross_entropy(logits[0], targets[0]), F.cross_entropy(logits[1, 5:], targets[1, 5:])]
    assert row_mean_loss(logits, targets).item() == pytest.approx(torch.stack(rows).mean().item())


def test_token_mean_weighs_every_scored_token_the_same(tmp_path, token_dir):
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    targets[1, :5] = IGNORE  # one scored token in row 1, six in row 0
    every_token = F.cross_entropy(torch.cat([logits[0], logits[1, 5:]]), torch.cat([targets[0], targets[1, 5:]]))
    assert token_mean_loss(logits, targets).item() == pytest.approx(every_token.item())
    assert token_mean_loss(logits, targets).item() != pytest.approx(row_mean_loss(logits, targets).item())
    with pytest.raises(ValueError, match="loss must be one of row_mean, token_mean"):
        tiny_recipe(tmp_path, token_dir, loss="mean")


def test_row_mix_draws_each_source_at_its_share(tmp_path, token_dir):
    """Tuning rows score a 4-token answer, repeat windows one span a chunk, pretraining every token."""
    ids = np.arange(4096, dtype=np.uint16) % 64
    offsets = np.arange(0, 4097, 64)
    np.savez(tmp_path / "t.npz", ids=ids, offsets=offsets, answer_starts=offsets[:-1] + 60)
    mix = RowMix(
        tiny_recipe(
            tmp_path, token_dir, tune=str(tmp_path / "t.npz"), tune_fraction=0.5, repeat_fraction=0.25, seq_len=128
        ),
        np.random.default_rng(0),
        chunk_size=64,
    )
    _, targets = mix.batch(800)
    scored = (targets != IGNORE).sum(1)
    tuned, repeated, pretrained = ((scored == n).mean() for n in (4, 32, 128))
    assert abs(tuned - 0.5) < 0.06 and abs(repeated - 0.25) < 0.06 and abs(pretrained - 0.25) < 0.06
    assert np.isin(scored, (4, 32, 128)).all()


def test_learning_rate_warms_up_then_decays_by_steps_or_minutes(tmp_path, token_dir):
    r = tiny_recipe(tmp_path, token_dir, steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1, max_minutes=10.0)
    assert learning_rate(r, 0) == pytest.approx(0.1)
    assert learning_rate(r, 10) == pytest.approx(1.0)
    assert learning_rate(r, 100) == pytest.approx(0.1)
    assert learning_rate(r, 20, minutes=10.0) == pytest.approx(0.1)  # the wall-clock budget ends first


def test_repeat_windows_score_a_copy_of_an_earlier_span_in_each_chunk(token_dir):
    """Each chunk ends with a span seen earlier in it, scored there only; the span is the chunk's own
    tokens in random order (never a stretch of the text, which a model could recall)."""
    windows = PretrainWindows(token_dir, 256, np.random.default_rng(0))
    originals = PretrainWindows(token_dir, 256, np.random.default_rng(0))  # replays the same windows
    repeats = RepeatWindows(windows, 64, np.random.default_rng(1))
    for _ in range(20):
        inputs, targets = repeats.sample()
        original, _ = originals.sample()
        assert inputs.shape == targets.shape == (256,)
        for begin in range(0, 256, 64):
            scored = np.flatnonzero(targets[begin : begin + 64] != IGNORE)
            length = len(scored)
            assert length == 16  # between 16 and chunk // 4, both 16 here
            assert list(scored) == list(range(63 - length, 63))  # the chunk's last `length` tokens
            span = inputs[begin + 64 - length : begin + 64]
            assert (targets[begin + 63 - length : begin + 63] == span).all()
            earlier = inputs[begin : begin + 32]
            assert any((earlier[i : i + length] == span).all() for i in range(32 - length + 1))
            text = original[begin : begin + 64]
            assert set(span) <= set(text)
            assert not any((text[i : i + length] == span).all() for i in range(64 - length + 1))
    with pytest.raises(ValueError, match="whole chunks"):
        RepeatWindows(PretrainWindows(token_dir, 100, np.random.default_rng(0)), 64, np.random.default_rng(0))


def test_attention_scale_start_multiplies_the_q_k_scales_of_the_model_started_from(tmp_path, token_dir):
    start = train(tiny_recipe(tmp_path / "a", token_dir, steps=2, save_every=2))
    before = Megalodon.from_pretrained(start).layers[1].mega.gamma.detach().clone()
    after_run = train(
        tiny_recipe(
            tmp_path / "b", token_dir, steps=1, save_every=1, lr=0.0, init_from=str(start), attention_scale_start=2.0
        )
    )
    after = Megalodon.from_pretrained(after_run).layers[1].mega.gamma.detach()
    assert torch.allclose(after + 1, 2 * (before + 1))


def test_a_run_stopped_by_sigterm_saves_and_resumes_where_it_stopped(tmp_path, token_dir):
    """`timeout` (or Ctrl-C) ends a device call's share of a long run: the run saves and exits 0."""
    run = tiny_recipe(tmp_path, token_dir, steps=100_000, log_every=1, save_every=100_000)
    path = tmp_path / "recipe.toml"
    fields = [f"{k} = {json.dumps(v)}" for k, v in asdict(run).items() if k != "model" and v is not None]
    path.write_text("\n".join(fields) + '\n[model]\npreset = "tiny"\nvocab_size = 64\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "megadoc.training.loop", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    saved = torch.load(tmp_path / "run" / "checkpoint" / "trainer.pt", weights_only=True)
    assert saved["step"] >= 3
    train(replace(run, steps=saved["step"] + 2))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps[-2:] == [saved["step"] + 1, saved["step"] + 2]


def test_signed_attention_scales_start_a_fresh_model_with_q_k_products_of_both_signs(tmp_path, token_dir):
    trained = train(tiny_recipe(tmp_path, token_dir, steps=1, save_every=1, lr=0.0, signed_attention_scales=3.0))
    for layer in Megalodon.from_pretrained(trained).layers:
        gamma = layer.mega.gamma.detach()
        assert torch.allclose(gamma[0] + 1, torch.full_like(gamma[0], 3.0))
        products = (gamma[0] + 1) * (gamma[1] + 1)
        assert set(products.round().tolist()) == {-9.0, 9.0}


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "mini").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_names_a_model(path):
    """A recipe with a misspelt key or a wrong model fails here, not minutes into a GPU run."""
    loaded = Recipe.load(path)
    assert model_config(loaded).model_dim > 0
    assert loaded.max_minutes or loaded.steps < 100000
    assert (loaded.tune is not None) == ("tune" in path.name)
    assert 0 <= loaded.tune_fraction + loaded.repeat_fraction <= 1
