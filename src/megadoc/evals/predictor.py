"""The Megalodon predictor for the SCROLLS runner (megadoc.evals.runner.Predictor)."""

from __future__ import annotations

from megadoc import prompts
from megadoc.engine import GenerationConfig
from megadoc.evals.scrolls import Example
from megadoc.evals.tasks import ANSWER_TOKENS, APP_TEMPLATES, TEMPLATES, answer_text
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.session import ProgressCallback, ReadDocument, Reader

LAYOUTS = ("scrolls", "app")


class MegalodonPredictor:
    """Answers an example in one of two layouts.

    scrolls: SCROLLS' input (question, blank line, document: the `before` part of the task's
    template plus the document) read with a fresh state, then the question asked again; no two
    examples share a read. app: what `megadoc ask` (or `summarize --query`, for the summary tasks)
    does: the document read alone, then the question after it (a question asking for a person
    answered with a name where `names`, as `Reader.ask` does); examples about the document just
    read share its read, so a set grouped by document reads each document once. With recall,
    evidence from the document goes before the question in both. `on_read` follows each read
    (ProgressBar.read)."""

    def __init__(
        self,
        reader: Reader,
        recall: bool,
        max_new_tokens: int | None = None,
        no_repeat_ngram: int = 0,
        on_read: ProgressCallback | None = None,
        layout: str = "scrolls",
        names: bool = True,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        self.reader, self.recall, self.max_new_tokens = reader, recall, max_new_tokens
        self.no_repeat_ngram, self.on_read, self.layout, self.names = no_repeat_ngram, on_read, layout, names
        self._last_read: ReadDocument | None = None

    def predict(self, example: Example) -> str:
        if self.layout == "app":
            template = APP_TEMPLATES[example.task]
            read = self._read_alone(example)
        else:
            template = TEMPLATES[example.task]
            before, _ = prompts.split(template, question=example.question)
            document = Document(before + example.document, [], source=example.id, kind="text")
            read = self.reader.read(document, self.on_read)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens or ANSWER_TOKENS[example.task],
            no_repeat_ngram=self.no_repeat_ngram,
        )
        if template == "qa":
            response = self.reader.ask(read, example.question, config, recall=self.recall, names=self.names)
        else:
            slot = "query" if "query" in prompts.slots(template) else "question"
            query = example.question if self.recall else None
            response = self.reader.respond(read, template, config, recall_query=query, **{slot: example.question})
        return answer_text(example.task, response.collect())

    def _read_alone(self, example: Example) -> ReadDocument:
        """The document read on its own: the last read again when the example shares its document."""
        if self._last_read is None or self._last_read.document.text != example.document:
            document = Document(example.document, [], source=example.id, kind="text")
            self._last_read = self.reader.read(document, self.on_read)
        return self._last_read
