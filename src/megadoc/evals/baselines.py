"""Predictors to compare Megalodon with: trivial floors, and SCROLLS' layout for attention models.

``VLLMPredictor`` (and ``megadoc.evals.hf.HFPredictor`` with ``context="scrolls"``) see only what
fits in their window and cut it
the way SCROLLS' baselines do (github.com/tau-nlp/scrolls, baselines/src/run.py):
the tokenizer truncates the input from the right, so the question (which comes
first) is kept and the end of the document is lost; decoding is greedy
(``--num_beams 1``). Our causal-LM prompt is SCROLLS' input followed by the
question again and an answer cue (prompts/scrolls_<task>.txt), and the document is
the only part that gets cut.
"""

import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from megadoc import prompts
from megadoc.evals.metrics import normalize_answer
from megadoc.evals.scrolls import Example
from megadoc.evals.tasks import ANSWER_TOKENS, TEMPLATES, answer_text
from megadoc.pipeline.names import character_names

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Characters of document kept before tokenizing (SCROLLS trims NarrativeQA strings to 7 per
# token): tokenizing a whole book only to keep its first pages would be slow.
CHARS_PER_TOKEN_BOUND = 8


class LeadBaseline:
    """The first ``sentences`` sentences of the document (a summarization floor, for QMSum)."""

    def __init__(self, sentences: int = 10) -> None:
        self.sentences = sentences

    def predict(self, example: Example) -> str:
        # A regex split is enough for a floor and needs no sentence-tokenizer data.
        return " ".join(_SENTENCE_END.split(example.document.strip(), maxsplit=self.sentences)[: self.sentences])


class MostFrequentNameBaseline:
    """The story's most frequent character name that the question does not use (a floor for
    questions about novels: many ask who did what)."""

    def predict(self, example: Example) -> str:
        used = set(re.findall(r"\w+", example.question))
        return next((name for name in _names_by_frequency(example.document) if name not in used), "")


_CHARS_PER_NAME_SIGHTING = 5000


@cache
def _names_by_frequency(document: str) -> tuple[str, ...]:
    """The document's character names, most frequent first (a book's questions share one count).
    A name must be seen mid-sentence 8 times in a book, fewer in a short story (twice in a fairy tale)."""
    min_count = max(2, min(8, len(document) // _CHARS_PER_NAME_SIGHTING))
    counts = {name: len(re.findall(rf"\b{name}\b", document)) for name in character_names(document, min_count)}
    return tuple(sorted(counts, key=lambda name: (-counts[name], name)))


class MajorityAnswerBaseline:
    """Always the most frequent reference answer of a training set (a QA floor).

    Answers are counted after SQuAD normalization, so "Yes" and "yes." are one answer;
    the first spelling seen is the one predicted.
    """

    def __init__(self, answers: Iterable[str]) -> None:
        counts: Counter[str] = Counter()
        spelling: dict[str, str] = {}
        for answer in answers:
            key = normalize_answer(answer)
            if key:
                counts[key] += 1
                spelling.setdefault(key, answer)
        if not counts:
            raise ValueError("MajorityAnswerBaseline needs at least one non-empty answer")
        self.answer = spelling[counts.most_common(1)[0][0]]

    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> "MajorityAnswerBaseline":
        return cls(reference for example in examples for reference in example.references)

    def predict(self, example: Example) -> str:
        return self.answer


def prompt_ids(
    tokenizer: Any, example: Example, window: int, max_new_tokens: int, template: str | None = None
) -> list[int]:
    """Token ids of the task's SCROLLS prompt, the document cut from its end to fit the window.

    ``tokenizer`` is a Hugging Face tokenizer; ``template`` defaults to the task's. The result, plus
    ``max_new_tokens``, fits in ``window``.
    """
    before, after = prompts.split(template or TEMPLATES[example.task], question=example.question)
    head = tokenizer.encode(before, add_special_tokens=False)
    tail = tokenizer.encode(after, add_special_tokens=False)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    budget = window - max_new_tokens - len(bos) - len(head) - len(tail)
    if budget <= 0:
        raise ValueError(f"a window of {window} tokens leaves no room for the document of {example.id}")
    text = example.document[: budget * CHARS_PER_TOKEN_BOUND]
    return bos + head + tokenizer.encode(text, add_special_tokens=False)[:budget] + tail


class VLLMPredictor:
    """Greedy decoding with vLLM (GPU); the same prompt and truncation as ``HFPredictor``.

    ``llm_options`` go to ``vllm.LLM`` (e.g. ``max_model_len``, ``dtype``).
    """

    def __init__(
        self, model_dir: str | Path, max_new_tokens: int | None = None, window: int | None = None, **llm_options: Any
    ) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError("this predictor needs vllm: pip install vllm (needs a GPU)") from error
        self.llm = vllm.LLM(model=str(model_dir), **llm_options)
        self.tokenizer = self.llm.get_tokenizer()
        self.window = window or self.llm.llm_engine.model_config.max_model_len
        self.max_new_tokens = max_new_tokens
        self.sampling = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens or max(ANSWER_TOKENS.values()))

    def predict(self, example: Example) -> str:
        ids = prompt_ids(self.tokenizer, example, self.window, self.max_new_tokens or ANSWER_TOKENS[example.task])
        [output] = self.llm.generate([{"prompt_token_ids": ids}], self.sampling, use_tqdm=False)
        return answer_text(example.task, output.outputs[0].text)
