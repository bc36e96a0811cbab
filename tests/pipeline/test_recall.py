"""Evidence recall on real ingested documents: passages, BM25 choice within a token budget,
document order, labels, and citations."""

import logging
import os
import subprocess
import sys
from itertools import pairwise

import pytest

from megadoc.engine import Tokenizer
from megadoc.pipeline.ingest import load_document
from megadoc.pipeline.recall import PassageIndex, passage_size
from tests.helpers import KEEPER, austen_paragraphs, needs_cuda, write_pdf, write_vtt


@pytest.fixture(scope="module")
def tokenizer(sp_model_path):
    return Tokenizer.load(sp_model_path)


@pytest.fixture
def pdf_index(tmp_path, tokenizer):
    pages = austen_paragraphs(4)
    pages[2] += " " + KEEPER
    document = load_document(write_pdf(tmp_path / "book.pdf", pages))
    _, offsets = tokenizer.encode_with_offsets(document.text)
    return PassageIndex.build(document, offsets, 48), tokenizer


def test_passages_tile_the_document_and_long_pages_are_not_straddled(pdf_index):
    index, _ = pdf_index
    passages = index.passages
    assert passages[0].token_start == 0
    assert all(a.token_end == b.token_start for a, b in pairwise(passages))
    assert all(p.token_end - p.token_start <= 48 + 16 for p in passages)
    assert all(p.label in ("p. 1", "p. 2", "p. 3", "p. 4") for p in passages)  # never "pp. 2-3"
    assert passage_size(16) == 32 and passage_size(1024) == 200 and passage_size(4096) == 200


def test_evidence_is_the_best_passages_that_fit_in_document_order(pdf_index):
    index, tokenizer = pdf_index

    def count(text):
        return len(tokenizer.encode(text))

    evidence = index.evidence("Who was the lighthouse keeper at Lyme?", budget=10_000, count_tokens=count)
    assert evidence.text.startswith("[p. ")
    starts = [p.token_start for p in evidence.passages]
    assert starts == sorted(starts)

    one = index.evidence("lighthouse keeper Quince", budget=1, count_tokens=count)
    [best] = one.passages  # the budget takes none, but the best passage always comes
    assert best.label == "p. 3" and "Quince" in index.text(best)
    assert one.text.startswith("[p. 3] ")

    small = index.evidence("Elliot Kellynch Anne lighthouse", budget=120, count_tokens=count)
    assert count(small.text) <= 120 + 4 and len(small.passages) >= 1
    assert index.evidence("xylophone zeppelin", budget=500, count_tokens=count) is None


def test_citations_rank_recalled_passages_by_question_and_answer(pdf_index):
    index, tokenizer = pdf_index
    evidence = index.evidence("lighthouse keeper Lyme Elliot", 10_000, lambda t: len(tokenizer.encode(t)))
    [first, *_] = index.cite(evidence, "Who was the lighthouse keeper?", "Bartholomew Quince")
    assert first.label == "p. 3" and "Quince" in first.excerpt and first.score > 0
    labels = [c.label for c in index.cite(evidence, "lighthouse keeper Lyme Elliot", "")]
    assert len(labels) == len(set(labels)) <= 3


def test_caption_passages_carry_times_and_speakers(tmp_path, tokenizer):
    cues = [("Alice", f"Item {n}: the committee discussed topic number {n} at length today.") for n in range(6)]
    document = load_document(write_vtt(tmp_path / "meeting.vtt", cues, seconds_each=60))
    _, offsets = tokenizer.encode_with_offsets(document.text)
    assert len(offsets) < 400
    index = PassageIndex.build(document, offsets, 400)  # short cues are joined
    assert [p.label for p in index.passages] == ["00:00:00-00:06:00 (Alice)"]
    index = PassageIndex.build(document, offsets, 32)  # cues longer than a passage: cut, never joined
    labels = [p.label for p in index.passages]
    assert len(labels) > 6 and sorted(set(labels)) == [f"00:0{n}:00 (Alice)" for n in range(6)]


def _import_recall_and_report(code: str, **env: str) -> str:
    """Run `import megadoc.pipeline.recall` and then `code` in a fresh interpreter; its stdout."""
    environment = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"} | env
    done = subprocess.run(
        [sys.executable, "-c", f"import megadoc.pipeline.recall\n{code}"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.strip()


def test_importing_recall_keeps_jax_off_the_gpu_unless_the_user_chose():
    assert _import_recall_and_report("import os; print(os.environ['JAX_PLATFORMS'])") == "cpu"
    chosen = _import_recall_and_report("import os; print(os.environ['JAX_PLATFORMS'])", JAX_PLATFORMS="cuda")
    assert chosen == "cuda"


@pytest.mark.gpu
@needs_cuda
def test_recall_leaves_the_gpu_memory_to_the_model():
    """bm25s starts JAX at import where JAX is installed; JAX's default takes 75% of GPU memory."""
    pytest.importorskip("jax", reason="JAX is optional: bm25s only starts it where it is installed")
    free = _import_recall_and_report(
        "import jax, torch; free, total = torch.cuda.mem_get_info(); print(jax.default_backend(), free / total)"
    )
    backend, fraction = free.split()
    assert backend == "cpu" and float(fraction) > 0.5


def test_building_an_index_logs_nothing_below_a_warning(tmp_path, tokenizer, caplog):
    caplog.set_level(logging.DEBUG)
    document = load_document(write_pdf(tmp_path / "book.pdf", austen_paragraphs(2)))
    PassageIndex.build(document, tokenizer.encode_with_offsets(document.text)[1], 48)
    assert not [record for record in caplog.records if record.name.startswith("bm25s")]
