"""StaticDecoder (engine/decode.py) against the model's own one-token forward: logits, the state it
reaches, and greedy generation; on CPU eagerly, and on a GPU its CUDA-graph replay in bf16."""

import pytest
import torch

from megadoc.engine import GenerationConfig, Megalodon, MegalodonConfig, State, quantize_weights
from megadoc.engine import generation as generate_module
from megadoc.engine import model as model_module
from megadoc.engine.decode import StaticDecoder, decoder_for
from megadoc.kernels import attention as attention_module
from megadoc.kernels import timestep_norm as timestep_norm_module
from tests.helpers import rel_err

TINY = MegalodonConfig.preset("tiny")  # chunk 16


def perturbed_model(config: MegalodonConfig, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Megalodon:
    """Random weights with every zero-initialised parameter made non-zero, so that each one matters."""
    torch.manual_seed(0)
    model = Megalodon(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if torch.all(param == 0) or "norm" in name or "gamma" in name or "beta" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.to(device=device, dtype=dtype)


def assert_states_equal(ours: State, theirs: State) -> None:
    assert ours.position == theirs.position
    assert ours.tensors().keys() == theirs.tensors().keys()
    for name, a in ours.tensors().items():
        b = theirs.tensors()[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize(
    ("batch", "prompt", "refresh"),
    [(1, 5, None), (2, 21, None), (2, 90, 2)],  # mid-chunk starts; the last keeps recent ids
)
def test_logits_and_state_match_one_token_forward(batch, prompt, refresh):
    model = perturbed_model(TINY.replace(norm_refresh_after=refresh))
    steps = 45  # crosses at least two chunk boundaries
    ids = torch.randint(0, TINY.vocab_size, (batch, prompt + steps))
    with torch.no_grad():
        state = model.new_state(batch)
        model(ids[:, :prompt], state)
        decoder = StaticDecoder(model, state.clone())
        for t in range(prompt, prompt + steps):
            expected = model(ids[:, t : t + 1], state)[:, -1]
            got = decoder.step(ids[:, t])
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert rel_err(got, expected) < 1e-5, t
    assert (prompt + steps) // TINY.chunk_size - prompt // TINY.chunk_size >= 2
    assert_states_equal(decoder.to_state(), state)


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="CPU tensors go through the kernels only under the interpreter; on a GPU the bf16 graph tests cover them",
)
def test_triton_step_kernels_match_the_reference_path(monkeypatch):
    """The decoder through the Triton norm-step and decode-attention kernels (under the interpreter
    on CPU) against the model's reference path: the kernels' in-place statistics and slot index."""
    pytest.importorskip("triton")
    model = perturbed_model(TINY)
    batch, prompt, steps = 2, 9, 12  # crosses a chunk boundary
    ids = torch.randint(0, TINY.vocab_size, (batch, prompt + steps))
    with torch.no_grad():
        state = model.new_state(batch)
        model(ids[:, :prompt], state)
        start = state.clone()
        expected = [model(ids[:, t : t + 1], state)[:, -1] for t in range(prompt, prompt + steps)]
        triton_without_grad = lambda x: not torch.is_grad_enabled()
        monkeypatch.setattr(attention_module, "use_triton", triton_without_grad)
        monkeypatch.setattr(timestep_norm_module, "use_triton", triton_without_grad)
        decoder = StaticDecoder(model, start)
        for t, logits in zip(range(prompt, prompt + steps), expected, strict=True):
            assert rel_err(decoder.step(ids[:, t]), logits) < 1e-5, t
    assert_states_equal(decoder.to_state(), state)


def test_grouped_step_matches_the_model_and_keeps_greedy_ids(monkeypatch):
    """`grouped=True` (wz, wr and wh1 in one `fused_linear_grouped` call per layer; its reference
    here) against the model's one-token forward: logits, greedy ids across a chunk boundary, state;
    then again after the three weights change in place and the decoder is reset (the group refilled)."""
    model = perturbed_model(TINY)
    calls = []
    grouped = model_module.fused_linear_grouped
    monkeypatch.setattr(model_module, "fused_linear_grouped", lambda *a: calls.append(1) or grouped(*a))

    def greedy(decoder: StaticDecoder, state: State, steps: int) -> None:
        token = expected_token = torch.randint(0, TINY.vocab_size, (2,))
        for t in range(steps):
            expected = model(expected_token[:, None], state)[:, -1]
            got = decoder.step(token)
            assert rel_err(got, expected) < 1e-5, t
            token, expected_token = got.argmax(-1), expected.argmax(-1)
            assert torch.equal(token, expected_token), t
        assert_states_equal(decoder.to_state(), state)

    with torch.no_grad():
        state = model.new_state(2)
        model(torch.randint(0, TINY.vocab_size, (2, 9)), state)
        decoder = StaticDecoder(model, state.clone(), grouped=True)
        greedy(decoder, state, 14)
        assert len(calls) == 14 * TINY.num_layers
        for linear in (model.layers[1].mega.wz, model.layers[1].mega.wr, model.layers[1].mega.wh1):
            linear.weight.mul_(1.5)
            linear.bias.add_(0.1)
        decoder.reset(state)
        greedy(decoder, state, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the bf16 graph tests run the grouped kernel itself")
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
def test_grouped_step_launches_one_kernel_for_the_reads_of_m(monkeypatch, int8):
    """bf16 decoding with `fused_linear` routed to the Triton kernels (under the interpreter on CPU),
    grouped and not: per layer one grouped launch (wz, wr, wh1) and 4 single ones (wv, wh2, fc1 with
    fc3, fc2) instead of 7, with int8 weights too, and the same logits, bit for bit here (the
    interpreter's tiles are the same; on a GPU the group's wider tiles sum K in another order)."""
    pytest.importorskip("triton")
    import megadoc.kernels.linear as linear_module
    import megadoc.kernels.linear.triton as linear_triton

    model = perturbed_model(TINY, dtype=torch.bfloat16)
    model = quantize_weights(model) if int8 else model
    ids = torch.randint(0, TINY.vocab_size, (2, 11), generator=torch.Generator().manual_seed(4))
    launches = []

    def counted(name: str):
        kernel = getattr(linear_triton, name)
        return lambda *args, **kwargs: launches.append(name) or kernel(*args, **kwargs)

    for name in ("fused_linear_triton", "fused_linear_grouped_triton"):
        monkeypatch.setattr(linear_triton, name, counted(name))
    monkeypatch.setattr(linear_module, "use_triton", lambda x: True)

    def decode(grouped: bool) -> list[torch.Tensor]:
        state = model.new_state(2)
        model(ids[:, :9], state)
        decoder = StaticDecoder(model, state, grouped=grouped)
        launches.clear()
        return [decoder.step(ids[:, t]).clone() for t in range(9, 11)]

    with torch.no_grad():
        ungrouped = decode(grouped=False)
        assert launches == ["fused_linear_triton"] * 2 * (7 * TINY.num_layers + 1)
        grouped = decode(grouped=True)
        layer = ["fused_linear_grouped_triton"] + ["fused_linear_triton"] * 4
        assert launches == (layer * TINY.num_layers + ["fused_linear_triton"]) * 2
    for got, expected in zip(grouped, ungrouped, strict=True):
        assert torch.equal(got, expected)


def test_to_state_continues_on_the_normal_path():
    model = perturbed_model(TINY)
    ids = torch.randint(0, TINY.vocab_size, (2, 40))
    with torch.no_grad():
        full = model(ids)
        state = model.new_state(2)
        model(ids[:, :10], state)
        decoder = StaticDecoder(model, state)
        for t in range(10, 30):
            decoder.step(ids[:, t])
        rest = model(ids[:, 30:], decoder.to_state())
    assert rel_err(rest, full[:, 30:]) < 1e-5


def test_greedy_generate_ids_unchanged_through_the_decoder(monkeypatch):
    model = perturbed_model(TINY)
    prompt = torch.randint(0, TINY.vocab_size, (7,))
    config = GenerationConfig(max_new_tokens=40)
    plain_state, static_state = model.new_state(), model.new_state()
    plain = list(model.generate(prompt, plain_state, config))
    monkeypatch.setattr(generate_module, "static_decoding", lambda model, config: True)
    static = list(model.generate(prompt, static_state, config))
    assert static == plain
    assert_states_equal(static_state, plain_state)


def test_generate_reuses_one_decoder_from_each_new_state(monkeypatch):
    """Answers in a row share the model's decoder (reset, never rebuilt), start from their own
    states, and see parameters changed in place between them (what the step derives from them, the
    CEMA coefficients, norm scales and q/k scales, is recomputed)."""
    model = perturbed_model(TINY)
    config = GenerationConfig(max_new_tokens=25)

    def both_ways(prompt: torch.Tensor) -> None:
        plain_state, static_state = model.new_state(), model.new_state()
        monkeypatch.setattr(generate_module, "static_decoding", lambda model, config: False)
        plain = list(model.generate(prompt, plain_state, config))
        monkeypatch.setattr(generate_module, "static_decoding", lambda model, config: True)
        assert list(model.generate(prompt, static_state, config)) == plain
        assert_states_equal(static_state, plain_state)

    both_ways(torch.randint(0, TINY.vocab_size, (7,)))
    first = model._static_decoders[1][1]
    both_ways(torch.randint(0, TINY.vocab_size, (23,)))
    with torch.no_grad():
        model.layers[0].mega.cema.alpha.add_(0.5)
    both_ways(torch.randint(0, TINY.vocab_size, (11,)))
    with torch.no_grad():
        model.layers[0].mega.gamma.add_(0.5)
        model.layers[0].mega.rmsnorm.weight.add_(0.5)
        model.layers[1].nffn.norm.weight.add_(0.5)
    both_ways(torch.randint(0, TINY.vocab_size, (11,)))
    assert model._static_decoders[1][1] is first and len(model._static_decoders) == 1


def test_a_decoder_in_use_is_not_lent_twice():
    model = perturbed_model(TINY)
    state = model.new_state()
    model(torch.randint(0, TINY.vocab_size, (1, 5)), state)
    first = decoder_for(model, state)
    second = decoder_for(model, state)
    assert second is not first and first.busy and second.busy
    first.busy = second.busy = False
    assert decoder_for(model, state) is first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_answers_in_a_row_keep_gpu_memory_flat():
    """Each answer once captured a new CUDA graph, and 33 MiB per graph (mini) never came back:
    a QMSum run stopped with a CUDA error after ~120 answers."""
    model = perturbed_model(TINY.replace(chunk_size=64), device="cuda", dtype=torch.bfloat16)
    config = GenerationConfig(max_new_tokens=20)

    def answer() -> int:
        state = model.new_state()
        list(model.generate(torch.randint(0, TINY.vocab_size, (100,)), state, config))
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    answer()
    settled = answer()
    assert [answer() for _ in range(4)] == [settled] * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compiled", [False, True])
def test_graph_replay_equals_eager_bf16(compiled):
    model = perturbed_model(TINY.replace(chunk_size=64), device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(0, TINY.vocab_size, (2, 30 + 150), device="cuda")
    with torch.inference_mode():
        state = model.new_state(2)
        model(ids[:, :30], state)
        graph = StaticDecoder(model, state.clone(), compiled=compiled)
        eager = StaticDecoder(model, state.clone(), graph=False)
        for t in range(30, ids.shape[1]):
            expected = model(ids[:, t : t + 1], state)[:, -1]
            replayed = graph.step(ids[:, t]).clone()
            assert torch.isfinite(replayed).all()
            assert rel_err(replayed, eager.step(ids[:, t])) < (2e-2 if compiled else 1e-3), t
            assert rel_err(replayed, expected) < 2e-2, t
    reached = graph.to_state()
    assert reached.position == state.position and reached.layers[0].k.shape == state.layers[0].k.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
def test_grouped_graph_equals_ungrouped_bf16(int8):
    """The captured step with wz, wr and wh1 in one launch (the default on CUDA) against the one with
    three: logits within the graph-vs-eager bound and the same greedy ids, bf16 and int8 weights."""
    model = perturbed_model(TINY.replace(chunk_size=64), device="cuda", dtype=torch.bfloat16)
    model = quantize_weights(model) if int8 else model
    with torch.inference_mode():
        state = model.new_state(2)
        model(torch.randint(0, TINY.vocab_size, (2, 30), device="cuda"), state)
        grouped = StaticDecoder(model, state.clone(), grouped=True)
        ungrouped = StaticDecoder(model, state.clone())
        assert grouped.grouped and not ungrouped.grouped
        token = torch.randint(0, TINY.vocab_size, (2,), device="cuda")
        for t in range(100):  # crosses a chunk boundary
            got, expected = grouped.step(token).clone(), ungrouped.step(token)
            assert rel_err(got, expected) < 1e-3, t
            token = expected.argmax(-1)
            assert torch.equal(got.argmax(-1), token), t
