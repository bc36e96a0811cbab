"""Engine invariants on random weights: streaming == full, state round trips, flat memory, checkpoints."""

import json

import pytest
import torch

from megadoc.engine import CheckpointError, GenerationConfig, Megalodon, MegalodonConfig, State
from megadoc.engine.generation import RepeatBan, sample
from megadoc.kernels import backend
from tests.helpers import needs_cuda, rel_err

TINY = MegalodonConfig.preset("tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Megalodon(TINY).eval()


def perturbed(model: Megalodon) -> Megalodon:
    """The tiny model with every zero-initialised parameter made non-zero, so that each one matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if torch.all(param == 0) or "norm" in name or "gamma" in name or "beta" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.mark.parametrize("length", [5, 16, 48, 53, 77])
def test_full_equals_uneven_pieces_equals_token_by_token(model, length):
    perturbed(model)
    ids = torch.randint(0, TINY.vocab_size, (2, length))
    with torch.no_grad():
        full = model(ids)
        rng = torch.Generator().manual_seed(length)
        state, pieces, start = model.new_state(2), [], 0
        while start < length:
            n = int(torch.randint(1, 2 * TINY.chunk_size, (1,), generator=rng))
            pieces.append(model(ids[:, start : start + n], state))
            start += n
        stepped_state = model.new_state(2)
        stepped = torch.cat([model(ids[:, t : t + 1], stepped_state) for t in range(length)], 1)
    assert full.shape == (2, length, TINY.vocab_size) and full.dtype == torch.float32
    assert rel_err(torch.cat(pieces, 1), full) < 1e-5
    assert rel_err(stepped, full) < 1e-5
    for a, b in zip(state.tensors().values(), stepped_state.tensors().values(), strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)


def test_read_returns_tail_and_continues_exactly(model):
    ids = torch.randint(0, TINY.vocab_size, (1, 5 * TINY.chunk_size + 7))
    with torch.no_grad():
        full = model(ids)
    state = model.new_state()
    progress = []
    tail = model.read(ids[0].tolist(), state, on_chunk=lambda done, total: progress.append(done))
    assert state.position == 5 * TINY.chunk_size and tail.shape == (1, 7)
    assert progress == [16, 32, 48, 64, 80]
    assert all(layer.k.shape[1] == 0 for layer in state.layers)  # a chunk boundary: no KV cache
    with torch.no_grad():
        rest = model(tail, state)
    assert rel_err(rest, full[:, -7:]) < 1e-5


def test_state_clone_save_load(model, tmp_path):
    ids = torch.randint(0, TINY.vocab_size, (2, 21))
    state = model.new_state(2)
    with torch.no_grad():
        model(ids, state)
    state.metadata = {"tokens_read": 21, "note": "ünïcode"}
    copy = state.clone()
    with torch.no_grad():
        model(ids[:, :3], copy)
    assert copy.position == 24 and state.position == 21  # the clone is independent
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors")
    assert loaded.position == 21 and loaded.metadata == state.metadata
    for (name, a), b in zip(state.tensors().items(), loaded.tensors().values(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.nbytes == state.nbytes > 0
    next_ids = torch.randint(0, TINY.vocab_size, (2, 4))
    with torch.no_grad():
        assert torch.equal(model(next_ids, state.clone()), model(next_ids, loaded))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_state_file_is_a_one_line_error(model, tmp_path, damage):
    path = tmp_path / "s.safetensors"
    model.new_state().save(path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage])
    with pytest.raises(ValueError, match="unreadable state file") as error:
        State.load(path)
    assert "\n" not in str(error.value)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_memory_is_flat_while_streaming_200_chunks(model):
    chunk = TINY.chunk_size
    ids = torch.randint(0, TINY.vocab_size, (1, 200 * chunk))
    state = model.new_state()
    readings = {}

    def record(done, total):
        if done // chunk in (10, 200):
            readings[done // chunk] = (_rss_bytes(), state.nbytes)

    model.read(ids, state, on_chunk=record)
    rss_growth = readings[200][0] - readings[10][0]
    assert readings[200][1] == readings[10][1]  # the state does not grow with the document
    assert rss_growth < 4 * 2**20, f"resident memory grew by {rss_growth / 2**20:.1f} MiB from chunk 10 to 200"


@pytest.mark.parametrize(
    "name, expected",
    [("7b", 7_385_817_088)],
)
def test_parameter_count_on_meta_device(name, expected):
    with torch.device("meta"):
        model = Megalodon(MegalodonConfig.preset(name))
    assert model.num_parameters() == expected


@pytest.mark.parametrize(
    "shape, expected",
    [
        (
            dict(
                num_layers=12,
                model_dim=1024,
                num_heads=1,
                z_dim=256,
                value_dim=2048,
                ffn_hidden_dim=2560,
                norm_num_groups=32,
                swiglu=False,
            ),
            220_627_968,
        ),
        (
            dict(
                num_layers=24,
                model_dim=2048,
                num_heads=2,
                z_dim=512,
                value_dim=4096,
                ffn_hidden_dim=4864,
                norm_num_groups=64,
                swiglu=False,
            ),
            1_342_832_640,
        ),
        (
            dict(
                num_layers=32,
                model_dim=4096,
                num_heads=4,
                z_dim=1024,
                value_dim=8192,
                ffn_hidden_dim=11264,
                norm_num_groups=64,
                swiglu=False,
            ),
            7_117_381_632,
        ),
    ],
    ids=["mega200M", "mega1.3B", "mega7.1B"],
)
def test_reference_preset_parameter_counts(shape, expected):
    with torch.device("meta"):
        model = Megalodon(MegalodonConfig(vocab_size=32000, chunk_size=2048, **shape))
    assert model.num_parameters() == expected


def test_config_json_round_trip_and_errors(tmp_path):
    for name in ("tiny", "mini", "7b"):
        config = MegalodonConfig.preset(name)
        config.save(tmp_path / "c.json")
        assert MegalodonConfig.load(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="unknown preset"):
        MegalodonConfig.preset("13b")
    with pytest.raises(ValueError, match="unknown MegalodonConfig fields: bogus"):
        MegalodonConfig.from_dict(TINY.to_dict() | {"bogus": 1})
    with pytest.raises(ValueError, match="divide by num_heads"):
        TINY.replace(z_dim=15)


def test_save_and_load_pretrained(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = Megalodon.from_pretrained(tmp_path / "m")
    ids = torch.randint(0, TINY.vocab_size, (1, 19))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    tied = Megalodon(TINY.replace(share_emb=True))
    tied.save_pretrained(tmp_path / "t")
    reloaded = Megalodon.from_pretrained(tmp_path / "t")
    assert reloaded.output.output.weight is reloaded.embed.weight
    with torch.no_grad():
        assert torch.equal(tied(ids), reloaded(ids))


def test_mismatched_checkpoint_names_first_offending_tensor(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["ffn_hidden_dim"] = 40
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensor layers\.0\.nffn\.fc1\.weight has shape \(48, 32\)"):
        Megalodon.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        Megalodon.from_pretrained(tmp_path / "m")


def test_a_shipped_model_without_weights_is_not_installed_never_random(tmp_path, monkeypatch):
    from megadoc.engine import checkpoint

    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "tokenizer.model").write_bytes(b"placeholder")
    monkeypatch.setattr(checkpoint, "MODELS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"model 'mini' is not installed yet \(no weights in .*mini\)"):
        Megalodon.from_pretrained("mini")


def test_generate_greedy_matches_manual_argmax_and_stops(model):
    state = model.new_state()
    prompt = torch.randint(0, TINY.vocab_size, (12,))
    tokens = list(model.generate(prompt, state.clone(), GenerationConfig(max_new_tokens=20)))
    assert len(tokens) == 20
    manual_state, manual = model.new_state(), []
    with torch.no_grad():
        logits = model(prompt[None], manual_state)[:, -1]
        for _ in range(20):
            manual.append(int(logits.argmax(-1)))
            logits = model(torch.tensor([[manual[-1]]]), manual_state)[:, -1]
    assert tokens == manual
    stop = tokens[5]
    stopped = list(model.generate(prompt, state.clone(), GenerationConfig(max_new_tokens=20, stop_ids=[stop])))
    assert stopped == tokens[: tokens.index(stop) + 1]


def test_repeat_ban_blocks_the_token_that_would_repeat_an_ngram():
    ban = RepeatBan(3)
    for token in [5, 6, 7, 1, 5, 6]:
        ban.add(token)
    logits = torch.zeros(2, 10)
    banned = ban.apply(logits)
    assert banned[0, 7] == float("-inf") and torch.isfinite(banned[0, :7]).all() and torch.isfinite(banned[1]).all()
    assert torch.equal(logits, torch.zeros(2, 10))  # the caller's logits are not changed
    ban.add(8)
    assert ban.apply(logits) is logits  # "6 8" was never followed by anything: nothing to ban
    assert RepeatBan(2).apply(logits) is logits


def test_generate_without_repeated_ngrams_follows_greedy_until_a_repeat(model):
    """Greedy over 120 tokens of a 512-token vocabulary repeats some token; with no_repeat_ngram=1
    the ids equal greedy's up to that token and none repeats; with 3, no 3-gram occurs twice."""
    prompt = torch.randint(0, TINY.vocab_size, (12,))
    greedy = list(model.generate(prompt, model.new_state(), GenerationConfig(max_new_tokens=120)))
    first_repeat = next(i for i, token in enumerate(greedy) if token in greedy[:i])
    unique = list(model.generate(prompt, model.new_state(), GenerationConfig(max_new_tokens=120, no_repeat_ngram=1)))
    assert len(unique) == len(set(unique)) == 120
    assert unique[:first_repeat] == greedy[:first_repeat] and unique[first_repeat] != greedy[first_repeat]
    config = GenerationConfig(max_new_tokens=120, no_repeat_ngram=3)
    trigrams = list(model.generate(prompt, model.new_state(), config))
    grams = [tuple(trigrams[i : i + 3]) for i in range(len(trigrams) - 2)]
    assert len(trigrams) == 120 and len(set(grams)) == len(grams)


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -5.0]])
    gen = torch.Generator().manual_seed(0)
    top1 = {int(sample(logits, GenerationConfig(temperature=1.0, top_k=1), gen)) for _ in range(50)}
    assert top1 == {0}
    top2 = {int(sample(logits, GenerationConfig(temperature=1.0, top_k=2), gen)) for _ in range(200)}
    assert top2 == {0, 1}
    # softmax([4,3,2,-1,-5]) ~ [.66, .24, .09, ...]: top_p 0.8 keeps the first two tokens only.
    nucleus = {int(sample(logits, GenerationConfig(temperature=1.0, top_p=0.8), gen)) for _ in range(300)}
    assert nucleus == {0, 1}
    assert int(sample(logits, GenerationConfig(temperature=0.0))) == 0


def test_training_step_reaches_every_parameter():
    """Every parameter gets a gradient (kernels without a backward must never run under autograd)."""
    torch.manual_seed(0)
    trainable = Megalodon(TINY.replace(share_emb=True))
    ids = torch.randint(0, TINY.vocab_size, (2, 3 * TINY.chunk_size + 5))
    loss = torch.nn.functional.cross_entropy(trainable(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    missing = [name for name, p in trainable.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_on_the_triton_kernels_matches_the_references(dtype):
    """The tiny model streamed in pieces on CUDA: Triton entry points == references."""
    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny")).to("cuda", dtype)
    ids = torch.randint(0, model.config.vocab_size, (2, 70), device="cuda")

    def logits() -> torch.Tensor:
        state, out, start = model.new_state(2), [], 0
        for n in (5, 20, 1, 1, 43):  # inside a chunk, across boundaries, single tokens
            out.append(model(ids[:, start : start + n], state))
            start += n
        return torch.cat(out, 1)

    with torch.no_grad():
        with backend("reference"):
            ref = logits()
        out = logits()
    assert rel_err(out, ref) < (1e-4 if dtype == torch.float32 else 2e-2)
