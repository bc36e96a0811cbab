"""continuation_logprobs: the log-probability of each continuation after a prompt, from a state."""

import torch

from megadoc.engine import Megalodon, MegalodonConfig, continuation_logprobs


def test_each_continuation_scores_as_one_pass_over_prompt_and_continuation_would():
    torch.manual_seed(0)
    model = Megalodon(MegalodonConfig.preset("tiny")).eval()
    state = model.new_state()
    model.read(torch.randint(4, 200, (300,)), state)  # a read document: the state at a chunk boundary
    before = state.clone()
    prompt, continuations = [5, 9, 14, 3], [[7], [8, 21], [30, 31, 32]]
    scores = continuation_logprobs(model, prompt, state, continuations)
    for ids, score in zip(continuations, scores, strict=True):
        with torch.inference_mode():
            logprobs = model(torch.tensor([prompt + ids]), before.clone())[0].log_softmax(-1)
        expected = sum(float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(ids))
        assert abs(score - expected) < 1e-4
    assert state.position == before.position
    assert all(torch.equal(t, before.tensors()[name]) for name, t in state.tensors().items())
    assert len(set(scores)) == 3
