"""The engine against golden outputs of the authors' own Megalodon (their CUDA kernels, float32)."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from megadoc.engine import CheckpointError, Megalodon
from megadoc.engine.checkpoint import convert_reference, read_reference_checkpoint
from megadoc.kernels.cema import cema_coefficients
from megadoc.kernels.cema.reference import cema_chunked, cema_sequential
from megadoc.kernels.timestep_norm import NormStats, timestep_norm
from tests.helpers import ORACLE, needs_oracle, rel_err

pytestmark = needs_oracle
TOL = 1e-5
FIXTURES = ["a", "b"]


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    root = ORACLE / request.param
    model = Megalodon.from_pretrained(root / "checkpoint")
    golden = load_file(str(root / "golden.safetensors"))
    with safe_open(str(root / "golden.safetensors"), "pt") as handle:
        meta = handle.metadata()
    return request.param, model, golden, meta


def stream(model, ids, pieces):
    state, out, start = model.new_state(ids.shape[0]), [], 0
    with torch.no_grad():
        for n in pieces:
            out.append(model(ids[:, start : start + n], state))
            start += n
    assert start == ids.shape[1]
    return torch.cat(out, 1), state


def test_full_forward(fixture):
    _, model, golden, _ = fixture
    with torch.no_grad():
        assert rel_err(model(golden["ids"]), golden["logits_full"]) < TOL


def test_streaming_pieces_and_state(fixture):
    _, model, golden, meta = fixture
    chunk = model.config.chunk_size
    length = golden["ids"].shape[1]
    piece_sets = [
        json.loads(meta["pieces"]),
        [3, chunk + 4, 2 * chunk - 1, length - 3 * chunk - 6],  # uneven, crossing chunk boundaries mid-call
        [1] * length,  # token by token
    ]
    for pieces in piece_sets:
        logits, state = stream(model, golden["ids"], pieces)
        assert rel_err(logits, golden["logits_full"]) < TOL
        assert rel_err(logits, golden["logits_stream"]) < TOL
        ours_by_name = state.tensors()
        assert torch.equal(ours_by_name.pop("recent_ids")[:, -1], golden["ids"][:, -1])
        for i, layer in enumerate(state.layers):
            assert layer.k.shape[1] == golden[f"state_after_ids.layers.{i}.attn.count"].item()
        for name, ours in ours_by_name.items():
            gold = golden[f"state_after_ids.{name}"]
            assert ours.shape == gold.shape, name
            if not ours.is_floating_point():
                assert torch.equal(ours, gold), name
            elif gold.numel():
                assert rel_err(ours, gold) < TOL, name


def test_greedy_decoding_from_state(fixture):
    _, model, golden, _ = fixture
    with torch.no_grad():
        state = model.new_state(2)
        last = model(golden["ids"], state)[:, -1]
        ids, logits = [], []
        token = last.argmax(-1)
        for _ in range(golden["greedy_ids"].shape[1]):
            ids.append(token)
            step = model(token[:, None], state)
            logits.append(step)
            token = step[:, -1].argmax(-1)
    assert torch.equal(torch.stack(ids, 1), golden["greedy_ids"])
    assert rel_err(torch.cat(logits, 1), golden["greedy_logits"]) < TOL


def test_score_reproduces_reference_perplexity_procedure(fixture):
    _, model, golden, _ = fixture
    assert model.config.norm_refresh_after == 8  # the converter turns the authors' procedure on
    ids = golden["ppl_ids"]
    logits = model.score(ids[:, :-1])
    losses = F.cross_entropy(logits[0], ids[0, 1:], reduction="none")
    assert rel_err(losses, golden["ppl_loss_reference"][0]) < TOL
    plain = Megalodon.from_pretrained(ORACLE / fixture[0] / "checkpoint")
    plain.config = plain.config.replace(norm_refresh_after=None)
    untruncated = plain.score(ids[:, :-1])
    assert rel_err(untruncated, golden["ppl_logits_full_untruncated"]) < TOL
    # The refresh really changes the numbers: the two procedures must differ measurably.
    assert rel_err(logits, golden["ppl_logits_full_untruncated"]) > 1e-3


def test_read_leaves_state_at_chunk_boundary_with_tail(fixture):
    _, model, golden, _ = fixture
    chunk = model.config.chunk_size
    ids = golden["ids"][:, : 3 * chunk + 5]
    state = model.new_state(2)
    seen = []
    tail = model.read(ids, state, on_chunk=lambda done, total: seen.append((done, total)))
    assert state.position == 3 * chunk
    assert torch.equal(tail, ids[:, 3 * chunk :])
    assert seen[-1] == (3 * chunk, ids.shape[1])
    with torch.no_grad():
        rest = model(torch.cat([tail, golden["ids"][:, 3 * chunk + 5 :]], 1), state)
    assert rel_err(rest, golden["logits_full"][:, 3 * chunk :]) < TOL


@pytest.mark.parametrize("name", FIXTURES)
def test_ops_equal_golden(name):
    ops = load_file(str(ORACLE / name / "ops.safetensors"))
    coeffs = cema_coefficients(*(ops[f"cema.{k}"] for k in ("alpha", "delta", "theta", "gamma", "omega")))
    x = ops["cema.x"].transpose(1, 2)
    h_prev = torch.view_as_complex(ops["cema.h_prev"].contiguous())
    for scan in (cema_sequential, cema_chunked):
        for start, tag in ((None, "zero"), (h_prev, "h_prev")):
            y, h = scan(x, coeffs, start)
            assert rel_err(y, ops[f"cema.y_from_{tag}"].transpose(1, 2)) < TOL
            assert rel_err(torch.view_as_real(h), ops[f"cema.h_from_{tag}"]) < TOL

    batch, _, _ = ops["tnorm.x"].shape
    groups = ops["tnorm.mean_prev"].shape[1]
    prior = NormStats(torch.zeros(batch, dtype=torch.long), torch.zeros(batch, groups), torch.ones(batch, groups))
    y, stats = timestep_norm(ops["tnorm.x"], prior, ops["tnorm.weight"], ops["tnorm.bias"])
    assert rel_err(y, ops["tnorm.y_from_prior"]) < TOL
    assert torch.equal(stats.count, ops["tnorm.count_from_prior"])
    assert rel_err(stats.mean, ops["tnorm.mean_from_prior"]) < TOL
    assert rel_err(stats.var, ops["tnorm.var_from_prior"]) < TOL

    carried = NormStats(ops["tnorm.count_prev"], ops["tnorm.mean_prev"], ops["tnorm.var_prev"])
    mask = ops["tnorm.padding_mask"]
    y, stats = timestep_norm(ops["tnorm.x"], carried, ops["tnorm.weight"], ops["tnorm.bias"], padding_mask=mask)
    assert rel_err(y, ops["tnorm.y"]) < TOL
    assert torch.all(y[mask] == 0)
    assert torch.equal(stats.count, ops["tnorm.count"])
    assert rel_err(stats.mean, ops["tnorm.mean"]) < TOL
    assert rel_err(stats.var, ops["tnorm.var"]) < TOL


def test_model_parallel_shards_merge_exactly():
    _, single = read_reference_checkpoint(ORACLE / "a" / "checkpoint")
    _, merged = read_reference_checkpoint(ORACLE / "a" / "checkpoint-mp2")
    assert set(single) == set(merged)
    for name in single:
        assert torch.equal(single[name], merged[name]), name
    golden = load_file(str(ORACLE / "a" / "golden.safetensors"))
    with torch.no_grad():
        logits = Megalodon.from_pretrained(ORACLE / "a" / "checkpoint-mp2")(golden["ids"])
    assert rel_err(logits, golden["logits_full"]) < TOL


@pytest.mark.parametrize("name", FIXTURES)
def test_converted_model_gives_bit_identical_logits(name, tmp_path):
    direct = Megalodon.from_pretrained(ORACLE / name / "checkpoint")
    converted = Megalodon.from_pretrained(convert_reference(ORACLE / name / "checkpoint", tmp_path / "out"))
    assert converted.config == direct.config
    ids = load_file(str(ORACLE / name / "golden.safetensors"))["ids"]
    with torch.no_grad():
        assert torch.equal(direct(ids), converted(ids))


def _copy_fixture(tmp_path, name="checkpoint"):
    target = tmp_path / name
    shutil.copytree(ORACLE / "a" / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _rewrite(path, edit):
    tensors = torch.load(path, weights_only=True)
    edit(tensors)
    torch.save(tensors, path)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.pop("layers.1.mega.wz.weight"), "missing tensor layers.1.mega.wz.weight"),
        (lambda t: t.__setitem__("layers.0.extra", torch.zeros(1)), "unexpected tensor layers.0.extra"),
        (
            lambda t: t.__setitem__("layers.0.mega.cema.alpha", torch.zeros(64, 8, 1)),
            "tensor layers.0.mega.cema.alpha has shape (64, 8, 1)",
        ),
    ],
)
def test_bad_reference_tensors_fail_with_one_line(tmp_path, edit, expected):
    directory = _copy_fixture(tmp_path)
    _rewrite(directory / "consolidated.pth", edit)
    with pytest.raises(CheckpointError) as error:
        Megalodon.from_pretrained(directory)
    message = str(error.value)
    assert expected in message and str(directory) in message and "\n" not in message


def test_truncated_and_miscounted_shards_fail_with_one_line(tmp_path):
    directory = _copy_fixture(tmp_path)
    data = (directory / "consolidated.pth").read_bytes()
    (directory / "consolidated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"consolidated\.pth: unreadable checkpoint file") as error:
        Megalodon.from_pretrained(directory)
    assert "\n" not in str(error.value)

    sharded = _copy_fixture(tmp_path, "checkpoint-mp2")
    (sharded / "consolidated.01.pth").unlink()
    with pytest.raises(CheckpointError, match="says 2 shard"):
        Megalodon.from_pretrained(sharded)


def test_pickled_code_is_never_executed(tmp_path):
    directory = _copy_fixture(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"embed.weight": Exploit()}, directory / "consolidated.pth")
    with pytest.raises(CheckpointError, match="unreadable checkpoint file"):
        Megalodon.from_pretrained(directory)
    assert not marker.exists()
