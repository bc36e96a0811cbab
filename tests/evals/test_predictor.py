"""The Megalodon predictor's two layouts, with the tiny model on a real excerpt."""

import pytest
import torch

from megadoc.engine import GenerationConfig
from megadoc.evals.predictor import MegalodonPredictor
from megadoc.evals.scrolls import Example
from megadoc.evals.tasks import answer_text
from megadoc.pipeline import registry
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.session import Reader
from tests.helpers import AUSTEN, VOYAGE


@pytest.fixture
def counted_reader(tiny_model_dir):
    """A real Reader whose reads are counted."""
    reader = Reader(registry.load(tiny_model_dir, torch.device("cpu")), None)
    read = reader.read
    reader.reads = 0

    def counting(document, on_progress=None):
        reader.reads += 1
        return read(document, on_progress)

    reader.read = counting
    return reader


def examples(task: str) -> list[Example]:
    first, second = VOYAGE, AUSTEN[3000:6000]
    questions = [
        (first, "Who is Harville?"),
        (first, "Who is Harville's sister?"),
        (second, "Who is Mrs Clay?"),
        (first, "Why?"),
    ]
    return [Example(str(i), task, document, q, ["x"]) for i, (document, q) in enumerate(questions)]


def test_app_layout_reads_a_document_once_for_its_run_of_questions(counted_reader):
    predictor = MegalodonPredictor(counted_reader, recall=True, max_new_tokens=3, layout="app")
    for example in examples("narrativeqa"):
        predictor.predict(example)
    assert counted_reader.reads == 3  # first, first again (shared), second, then first anew


def test_app_layout_answers_as_megadoc_ask_does(counted_reader):
    example = examples("narrativeqa")[1]
    predicted = MegalodonPredictor(counted_reader, recall=True, max_new_tokens=6, layout="app").predict(example)
    read = counted_reader.read(Document(example.document, [], source="ask", kind="text"))
    asked = counted_reader.ask(read, example.question, GenerationConfig(max_new_tokens=6)).collect()
    assert predicted == answer_text("narrativeqa", asked) == "Benwick"  # a name: the question asks for one


def test_scrolls_layout_reads_every_question_with_its_document(counted_reader):
    predictor = MegalodonPredictor(counted_reader, recall=False, max_new_tokens=3)
    for example in examples("qmsum"):
        predictor.predict(example)
    assert counted_reader.reads == 4


def test_an_unknown_layout_is_refused(counted_reader):
    with pytest.raises(ValueError, match="layout must be one of scrolls, app"):
        MegalodonPredictor(counted_reader, recall=True, layout="question-last")
