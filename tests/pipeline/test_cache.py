"""The state cache: round trip, refusal of foreign or damaged files, the per-document lock, listing
and removal, and the model fingerprint it keys on."""

import threading
import time

import torch

from megadoc.engine import Megalodon, MegalodonConfig
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache, cache_key

IDENTITY = {"model": "m" * 32, "tokenizer": "t" * 16, "document": "d" * 64}


def _model(**changes) -> Megalodon:
    torch.manual_seed(0)
    return Megalodon(MegalodonConfig.preset("tiny").replace(vocab_size=64, **changes))


def _read_state(model: Megalodon, tokens: int = 40):
    state = model.new_state()
    model.read(torch.arange(tokens) % 64, state)
    state.metadata = {**IDENTITY, "tokens_total": tokens, "complete": True}
    return state


def test_round_trip_and_the_key_names_all_three_identities(tmp_path):
    model = _model()
    cache = StateCache(tmp_path)
    key = cache_key(IDENTITY["model"], IDENTITY["tokenizer"], IDENTITY["document"])
    assert key != cache_key(IDENTITY["model"], "other", IDENTITY["document"])
    state = _read_state(model)
    cache.save(key, state)
    loaded = cache.load(key, IDENTITY, model.new_state(), warn=pytest_fail)
    assert loaded.position == 32 and loaded.metadata == state.metadata
    for name, tensor in state.tensors().items():
        assert torch.equal(tensor, loaded.tensors()[name]), name
    assert not list(cache.states.glob("*.tmp"))  # written through a temporary file, renamed


def pytest_fail(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


def test_foreign_damaged_or_misshapen_files_are_discarded_with_a_warning(tmp_path):
    model = _model()
    cache = StateCache(tmp_path)
    warnings: list[str] = []

    cache.save("k1", _read_state(model))
    assert cache.load("k1", {**IDENTITY, "model": "x" * 32}, model.new_state(), warnings.append) is None
    assert "made for another model" in warnings[-1] and not cache.path("k1").exists()

    cache.save("k2", _read_state(model))
    cache.path("k2").write_bytes(cache.path("k2").read_bytes()[:-7])
    assert cache.load("k2", IDENTITY, model.new_state(), warnings.append) is None
    assert "unreadable" in warnings[-1] and not cache.path("k2").exists()

    cache.save("k3", _read_state(_model(num_layers=3)))
    assert cache.load("k3", IDENTITY, model.new_state(), warnings.append) is None
    assert "tensors differ" in warnings[-1]

    cache.save("k4", _read_state(_model(cema_ndim=2)))
    assert cache.load("k4", IDENTITY, model.new_state(), warnings.append) is None
    assert "has shape" in warnings[-1]
    assert len(warnings) == 4 and all("reading the document again" in w for w in warnings)


def test_a_second_reader_of_the_same_document_waits_for_the_first(tmp_path):
    cache = StateCache(tmp_path)
    events: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with cache.lock("doc"):
            holding.set()
            time.sleep(0.3)
            events.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait()
    with cache.lock("doc", on_wait=lambda: events.append("waiting")):
        events.append("second in")
    thread.join()
    assert events == ["waiting", "first done", "second in"]
    with cache.lock("other", on_wait=lambda: events.append("never")):
        pass
    assert "never" not in events


def test_entries_remove_and_clear(tmp_path):
    model = _model()
    cache = StateCache(tmp_path)
    for key in ("aaa", "bbb", "ccc"):
        cache.save(key, _read_state(model))
    (cache.states / "zzz.state").write_bytes(b"not a state")
    entries = {e.key: e for e in cache.entries()}
    assert set(entries) == {"aaa", "bbb", "ccc", "zzz"}
    assert entries["aaa"].complete and entries["aaa"].position == 32 and entries["aaa"].size_bytes > 0
    assert entries["zzz"].metadata == {"unreadable": True}
    cache.remove("aaa")
    assert {e.key for e in cache.entries()} == {"bbb", "ccc", "zzz"}
    assert cache.clear() == 3 and cache.entries() == []


def test_the_fingerprint_follows_the_weights_and_is_memoized(tmp_path):
    directory = tmp_path / "model"
    _model().save_pretrained(directory)
    memo = tmp_path / "fingerprints.json"
    first = registry.fingerprint(directory, memo)
    assert memo.is_file() and registry.fingerprint(directory, memo) == first
    assert registry.fingerprint(directory) == first  # the memo only saves time
    _model(norm_eps=1e-6).save_pretrained(directory)  # same weights, another config
    assert registry.fingerprint(directory, memo) != first
    torch.manual_seed(1)
    Megalodon(MegalodonConfig.preset("tiny").replace(vocab_size=64)).save_pretrained(directory)
    assert registry.fingerprint(directory, memo) not in (first,)


def test_token_ids_and_spans_are_kept_for_the_same_document_only(tmp_path):
    cache = StateCache(tmp_path)
    ids, offsets = [1, 40, 41, 7], [(0, 0), (0, 3), (3, 5), (5, 9)]
    cache.save_tokens("k", IDENTITY, ids, offsets)
    assert cache.load_tokens("k", IDENTITY, text_length=9) == (ids, offsets)
    assert cache.load_tokens("k", {**IDENTITY, "tokenizer": "other"}, text_length=9) is None  # and removed
    assert cache.load_tokens("k", IDENTITY, text_length=9) is None
    cache.save_tokens("k", IDENTITY, ids, offsets)
    assert cache.load_tokens("k", IDENTITY, text_length=5) is None  # spans past the text: not this text
    cache.save_tokens("k", IDENTITY, ids, offsets)
    (cache.states / "k.tokens").write_bytes(b"\x00" * 20)
    assert cache.load_tokens("k", IDENTITY, text_length=9) is None
    cache.save_tokens("k", IDENTITY, ids, offsets)
    cache.save("k", _read_state(_model()))
    cache.clear()
    assert list(cache.states.iterdir()) == []
