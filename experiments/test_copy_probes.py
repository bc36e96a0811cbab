"""The copying probes (experiments/): the init study's three starts, the induction-head weights."""

import math

import pytest
import torch

from experiments.copy_init import copy_loss_curve, fresh_model
from experiments.induction_heads import induction_weights
from megadoc.pipeline.registry import load

pytestmark = pytest.mark.slow  # research: run with pytest -m slow experiments


def test_the_three_starts_differ_only_in_their_q_k_scale_products():
    products = {}
    for init in ("spec", "positive", "signed"):
        gamma = fresh_model(32, init).layers[0].mega.gamma.detach()
        products[init] = set(((gamma[0] + 1) * (gamma[1] + 1)).round().tolist())
    assert products == {"spec": {1.0}, "positive": {9.0}, "signed": {-9.0, 9.0}}
    spec, signed = fresh_model(32, "spec"), fresh_model(32, "signed")
    assert torch.equal(spec.layers[1].mega.wz.weight, signed.layers[1].mega.wz.weight)


def test_copy_loss_curve_starts_unable_to_copy():
    curve = copy_loss_curve(vocab=36, init="signed", steps=2, scale_lr=1.0)
    assert [step for step, _ in curve] == [0, 1]
    assert curve[0][1] > math.log(32) - 0.1  # no better than a uniform guess over the 32 ids


def test_induction_weights_are_attention_probabilities_per_layer_and_head():
    loaded = load("mini", torch.device("cpu"))
    ids = torch.tensor(loaded.tokenizer.encode("It was a dark and stormy night; the rain fell in torrents." * 3)[:40])
    weights = induction_weights(loaded.model, ids)
    config = loaded.model.config
    assert len(weights) == config.num_layers and all(len(heads) == config.num_heads for heads in weights)
    assert all(0.0 <= w <= 1.0 for heads in weights for w in heads)
    assert all("project" not in vars(layer.mega) for layer in loaded.model.layers)  # the spies are gone
