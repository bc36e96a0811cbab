"""The Megalodon predictor for the SCROLLS runner (megadoc.evals.runner.Predictor)."""

from __future__ import annotations

from megadoc import prompts
from megadoc.engine import GenerationConfig
from megadoc.evals.scrolls import Example
from megadoc.evals.tasks import ANSWER_TOKENS, TEMPLATES, answer_text
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.session import ProgressCallback, Reader


class MegalodonPredictor:
    """Reads the SCROLLS input (question, blank line, document: the `before` part of
    the task's template plus the document) with a fresh state, then answers after the
    question is asked again; with recall, evidence from the document goes before it.

    No state cache: the question comes first, so no two examples share a read. `on_read` follows
    each read (ProgressBar.read)."""

    def __init__(
        self,
        reader: Reader,
        recall: bool,
        max_new_tokens: int | None = None,
        no_repeat_ngram: int = 0,
        on_read: ProgressCallback | None = None,
    ) -> None:
        self.reader, self.recall, self.max_new_tokens = reader, recall, max_new_tokens
        self.no_repeat_ngram, self.on_read = no_repeat_ngram, on_read

    def predict(self, example: Example) -> str:
        template = TEMPLATES[example.task]
        before, _ = prompts.split(template, question=example.question)
        document = Document(before + example.document, [], source=example.id, kind="text")
        read = self.reader.read(document, self.on_read)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens or ANSWER_TOKENS[example.task],
            no_repeat_ngram=self.no_repeat_ngram,
        )
        query = example.question if self.recall else None
        text = self.reader.respond(read, template, config, recall_query=query, question=example.question).collect()
        return answer_text(example.task, text)
