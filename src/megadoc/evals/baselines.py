"""Predictors to compare Megalodon with: trivial floors and plain attention models.

``HFPredictor`` and ``VLLMPredictor`` see only what fits in their window and cut it
the way SCROLLS' baselines do (github.com/tau-nlp/scrolls, baselines/src/run.py):
the tokenizer truncates the input from the right, so the question (which comes
first) is kept and the end of the document is lost; decoding is greedy
(``--num_beams 1``). Our causal-LM prompt is SCROLLS' input followed by the
question again and an answer cue (prompts/scrolls_<task>.txt), and the document is
the only part that gets cut.
"""

import importlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from megadoc import prompts
from megadoc.evals.metrics import normalize_answer
from megadoc.evals.scrolls import Example

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Characters of document kept before tokenizing (SCROLLS trims NarrativeQA strings to 7 per
# token): tokenizing a whole book only to keep its first pages would be slow.
_CHARS_PER_TOKEN_BOUND = 8


class LeadBaseline:
    """The first ``sentences`` sentences of the document (a summarization floor, for QMSum)."""

    def __init__(self, sentences: int = 10) -> None:
        self.sentences = sentences

    def predict(self, example: Example) -> str:
        # A regex split is enough for a floor and needs no sentence-tokenizer data.
        return " ".join(_SENTENCE_END.split(example.document.strip(), maxsplit=self.sentences)[: self.sentences])


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


def prompt_ids(tokenizer: Any, example: Example, window: int, max_new_tokens: int) -> list[int]:
    """Token ids of the task's SCROLLS prompt, the document cut from its end to fit the window.

    ``tokenizer`` is a Hugging Face tokenizer. The result, plus ``max_new_tokens``,
    fits in ``window``.
    """
    before, after = prompts.split(f"scrolls_{example.task}", question=example.question)
    head = tokenizer.encode(before, add_special_tokens=False)
    tail = tokenizer.encode(after, add_special_tokens=False)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    budget = window - max_new_tokens - len(bos) - len(head) - len(tail)
    if budget <= 0:
        raise ValueError(f"a window of {window} tokens leaves no room for the document of {example.id}")
    text = example.document[: budget * _CHARS_PER_TOKEN_BOUND]
    return bos + head + tokenizer.encode(text, add_special_tokens=False)[:budget] + tail


def _answer(task: str, generated: str) -> str:
    """QA answers are one line; a QMSum answer is all the model wrote."""
    text = generated.strip()
    return text if task == "qmsum" else text.split("\n", 1)[0].strip()


def _require(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this predictor needs {module}: {install}") from error


class HFPredictor:
    """Greedy decoding with a Hugging Face causal LM read from a local directory."""

    def __init__(
        self,
        model_dir: str | Path,
        max_new_tokens: int = 128,
        window: int | None = None,
        device: str = "cpu",
        dtype: Any = None,
    ) -> None:
        transformers = _require("transformers", "pip install 'megadoc[hf]'")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self.model = model.to(device=device, dtype=dtype).eval()
        config = self.model.config
        self.window = window or getattr(config, "max_position_embeddings", None) or config.n_positions
        self.max_new_tokens = max_new_tokens

    def prompt_ids(self, example: Example) -> list[int]:
        return prompt_ids(self.tokenizer, example, self.window, self.max_new_tokens)

    def predict(self, example: Example) -> str:
        import torch

        ids = torch.tensor([self.prompt_ids(example)], device=self.model.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return _answer(example.task, self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))


class VLLMPredictor:
    """Greedy decoding with vLLM (GPU); the same prompt and truncation as ``HFPredictor``.

    ``llm_options`` go to ``vllm.LLM`` (e.g. ``max_model_len``, ``dtype``).
    """

    def __init__(
        self, model_dir: str | Path, max_new_tokens: int = 128, window: int | None = None, **llm_options: Any
    ) -> None:
        vllm = _require("vllm", "pip install vllm (needs a GPU)")
        self.llm = vllm.LLM(model=str(model_dir), **llm_options)
        self.tokenizer = self.llm.get_tokenizer()
        self.window = window or self.llm.llm_engine.model_config.max_model_len
        self.max_new_tokens = max_new_tokens
        self.sampling = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def predict(self, example: Example) -> str:
        ids = prompt_ids(self.tokenizer, example, self.window, self.max_new_tokens)
        [output] = self.llm.generate([{"prompt_token_ids": ids}], self.sampling, use_tqdm=False)
        return _answer(example.task, output.outputs[0].text)
