"""The Megalodon predictor for the SCROLLS runner (megadoc.evals.runner.Predictor)."""

from __future__ import annotations

from megadoc import prompts
from megadoc.engine import GenerationConfig
from megadoc.evals.scrolls import Example
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.session import Reader

# Answer lengths: a few words for the QA tasks, a paragraph for QMSum.
DEFAULT_MAX_NEW_TOKENS = {"narrativeqa": 64, "qasper": 64, "qmsum": 256}


class MegalodonPredictor:
    """Reads the SCROLLS input (question, blank line, document: the `before` part of
    prompts/scrolls_<task>.txt plus the document) with a fresh state, then answers after the
    question is asked again; with recall, evidence from the document goes before it.

    No state cache: the question comes first, so no two examples share a read."""

    def __init__(
        self, reader: Reader, recall: bool, max_new_tokens: int | None = None, no_repeat_ngram: int = 0
    ) -> None:
        self.reader, self.recall, self.max_new_tokens = reader, recall, max_new_tokens
        self.no_repeat_ngram = no_repeat_ngram

    def predict(self, example: Example) -> str:
        template = f"scrolls_{example.task}"
        before, _ = prompts.split(template, question=example.question)
        document = Document(before + example.document, [], source=example.id, kind="text")
        read = self.reader.read(document)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[example.task],
            no_repeat_ngram=self.no_repeat_ngram,
        )
        query = example.question if self.recall else None
        text = self.reader.respond(read, template, config, recall_query=query, question=example.question).collect()
        # QA answers are one line (as SCROLLS scores them); a QMSum answer is all the model wrote.
        text = text.strip()
        return text if example.task == "qmsum" else text.split("\n", 1)[0].strip()
