"""The reading pipeline: checkpoints every few chunks, Ctrl-C keeps what was read, a resumed read
ends in exactly the state of an uninterrupted one, and questions never change the document's state."""

from itertools import pairwise

import pytest
import torch

from megadoc.engine import GenerationConfig
from megadoc.pipeline import registry
from megadoc.pipeline.cache import StateCache, cache_key
from megadoc.pipeline.ingest import load_document
from megadoc.pipeline.session import Reader, ReadInterrupted
from tests.helpers import AUSTEN, DATA, VOYAGE


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return registry.load(tiny_model_dir, torch.device("cpu"))


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs") / "persuasion.txt"
    path.write_text(AUSTEN[:4000], encoding="utf-8")
    return load_document(path)


def _same_state(a, b) -> None:
    assert a.position == b.position
    for name, tensor in a.tensors().items():
        assert torch.equal(tensor, b.tensors()[name]), name


def test_checkpoints_every_few_chunks_while_reading(loaded, document, tmp_path):
    cache = StateCache(tmp_path)
    reader = Reader(loaded, cache, checkpoint_chunks=4)
    on_disk = []

    def watch(done, total):
        on_disk.extend(entry.position for entry in cache.entries())

    read = reader.read(document, watch)
    step = 4 * loaded.model.config.chunk_size
    assert read.status == "read" and read.tokens_read == read.state.position
    checkpoints = sorted(set(on_disk))
    assert checkpoints[0] == step and all(b - a == step for a, b in pairwise(checkpoints))
    [entry] = cache.entries()
    assert entry.complete and entry.position == read.state.position == len(read.ids) // 16 * 16


def test_an_interrupted_read_resumes_to_the_same_state(loaded, document, tmp_path):
    cache = StateCache(tmp_path)
    reader = Reader(loaded, cache, checkpoint_chunks=8)

    def interrupt(done, total):
        if done >= 200:  # not a checkpoint boundary: the last consistent state is saved on Ctrl-C
            raise KeyboardInterrupt

    with pytest.raises(ReadInterrupted) as stopped:
        reader.read(document, interrupt)
    saved = stopped.value.tokens_saved
    assert saved == 208 and not cache.entries()[0].complete and cache.entries()[0].position == saved

    resumed = reader.read(document)
    assert resumed.status == "resumed" and resumed.tokens_read == resumed.state.position - saved
    uncached = Reader(loaded, cache=None).read(document)
    _same_state(resumed.state, uncached.state)
    assert reader.read(document).status == "cached"


def test_questions_work_on_a_clone_of_the_state(loaded, document):
    reader = Reader(loaded, cache=None)
    read = reader.read(document)
    before = read.state.clone()
    config = GenerationConfig(max_new_tokens=5)
    first = reader.ask(read, "Who is Sir Walter Elliot?", config).collect()
    second = reader.ask(read, "Who is Sir Walter Elliot?", config).collect()
    assert first == second
    _same_state(read.state, before)
    plain = reader.ask(read, "Who is Sir Walter Elliot?", config, recall=False)
    plain.collect()
    assert plain.citations == [] and read.tail_text == document.text[read.offsets[read.state.position][0] :]


def test_a_state_cached_for_another_document_is_not_used(loaded, document, tmp_path):
    cache = StateCache(tmp_path)
    reader = Reader(loaded, cache)
    reader.read(document)
    [entry] = cache.entries()
    other = load_document(DATA / "austen_persuasion_excerpt.txt")
    assert other.content_hash() != document.content_hash()
    # Copy the first document's state under the second's key: its metadata names another document.
    key = cache_key(loaded.fingerprint, loaded.tokenizer.id, other.content_hash())
    cache.path(key).write_bytes(entry.path.read_bytes())
    warnings = []
    read = Reader(loaded, cache, warn=warnings.append).read(other)
    assert read.status == "read" and "made for another document" in warnings[0]


@pytest.mark.parametrize("recall", [True, False])
def test_tuning_rows_are_what_the_reader_feeds(loaded, document, monkeypatch, recall) -> None:
    """megadoc.training.rows's prompt layout equals, id for id, what `ask` feeds the model:
    the document up to its last chunk boundary, then recalled evidence (or the tail) and the prompt."""
    import megadoc.pipeline.session
    from megadoc.training.rows import prompt_ids

    fed = []
    real_stream_text = megadoc.pipeline.session.stream_text

    def recording_stream_text(model, tokenizer, ids, state, config):
        fed.append(list(ids))
        return real_stream_text(model, tokenizer, ids, state, config)

    monkeypatch.setattr(megadoc.pipeline.session, "stream_text", recording_stream_text)
    reader = Reader(loaded, cache=None)
    read = reader.read(document)
    question = "Who was Sir Walter Elliot of Kellynch Hall?"
    reader.ask(read, question, GenerationConfig(max_new_tokens=2), recall=recall).collect()

    chunk = loaded.model.config.chunk_size
    context, prompt = prompt_ids(loaded.tokenizer, "qa", document.text, question, recall, chunk_size=chunk)
    assert context == read.ids[: read.state.position]
    assert prompt == fed[0]
    text = loaded.tokenizer.decode(prompt)
    assert text.rstrip().endswith("Answer:") and question in text
    assert ("[line " in text) == recall  # recalled passages are tagged with where they came from


def test_the_passage_index_is_kept_with_the_state_and_made_only_when_needed(loaded, document, tmp_path):
    cache = StateCache(tmp_path)
    first = Reader(loaded, cache).read(document)
    assert first.index_status is None and "index" not in first.seconds  # not made by reading
    built = first.passages
    assert first.index_status == "built" and first.seconds["index"] >= 0

    second = Reader(loaded, cache).read(document)  # a new process, as far as the pipeline knows
    assert second.status == "cached" and second.passages.passages == built.passages
    assert second.index_status == "cached"
    query = "Sir Walter Elliot vanity"
    assert (second.passages.scores(query) == built.scores(query)).all()

    key = cache_key(loaded.fingerprint, loaded.tokenizer.id, document.content_hash())
    (tmp_path / "states" / f"{key}.recall" / "passages.json").write_text("[[0, 1, 2")  # damaged
    third = Reader(loaded, cache).read(document)
    assert third.passages.passages == built.passages and third.index_status == "built"
    cache.remove(key)
    assert not (tmp_path / "states" / f"{key}.recall").exists()


def test_a_who_question_is_answered_with_a_name_from_the_recalled_passages(loaded, tmp_path):
    path = tmp_path / "voyage.txt"
    path.write_text(VOYAGE, encoding="utf-8")
    reader = Reader(loaded, cache=None)
    read = reader.read(load_document(path))
    config = GenerationConfig(max_new_tokens=6)

    def free(question: str) -> str:
        return reader.respond(read, "qa", config, recall_query=question, question=question).collect()

    lamp = reader.ask(read, "Who kept the great lamp burning?", config)
    assert lamp.collect() in {"Harville", "Benwick"} and lamp.citations
    assert reader.ask(read, "Who is Harville's sister?", config).collect() == "Benwick"  # the only other name
    assert reader.ask(read, "Who kept the lamp?", config, names=False).collect() == free("Who kept the lamp?")
    for not_for_a_name in ("Who is Harville?", "What did Fanny write?", "Who sells zebras?"):  # the last: no passage
        assert reader.ask(read, not_for_a_name, config).collect() == free(not_for_a_name)
