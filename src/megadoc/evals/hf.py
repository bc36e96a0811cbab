"""A pretrained Hugging Face causal LM as a long-document reader, to measure beside Megalodon.

What a user would run instead of megadoc: a small local transformer that reads as much of the
document as its window holds (``context="head"``, what ``llm`` with a file fragment or ollama do),
or the same model fed megadoc's recalled passages (``recall=True``, retrieval-augmented). Both put
the prompt in the model's chat template when it has one. ``context="scrolls"`` is SCROLLS' own
baseline layout instead (no chat template, see ``baselines.prompt_ids``). Decoding is greedy.

The model is a directory (``config.json`` and weights) or a single GGUF file, which transformers
de-quantizes to float tensors (the ``gguf`` package, in the ``hf`` extra).
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from megadoc import prompts
from megadoc.evals.baselines import CHARS_PER_TOKEN_BOUND
from megadoc.evals.baselines import prompt_ids as scrolls_prompt_ids
from megadoc.evals.scrolls import Example
from megadoc.evals.tasks import ANSWER_TOKENS, TEMPLATES, answer_text
from megadoc.pipeline.ingest import Document
from megadoc.pipeline.recall import PassageIndex, passage_size

CONTEXTS = ("head", "scrolls")
_SLOT = "\x00DOCUMENT\x00"


def require(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this needs {module}: {install}") from error


def load_causal_lm(path: str | Path, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) from a model directory or a ``.gguf`` file, never the network."""
    transformers = require("transformers", "pip install 'megadoc[hf]'")
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        require("gguf", "pip install 'megadoc[hf]'")
        where, options = path.parent, {"gguf_file": path.name}
    elif path.is_dir():
        where, options = path, {}
    else:
        raise FileNotFoundError(f"{path}: not a model directory or a .gguf file")
    tokenizer = transformers.AutoTokenizer.from_pretrained(where, local_files_only=True, **options)
    model = transformers.AutoModelForCausalLM.from_pretrained(where, local_files_only=True, **options)
    return tokenizer, model.to(device=device, dtype=dtype).eval()


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    context: str  # the document text shown: its head or the recalled passages (scrolls: all, cut to fit)


class HFPredictor:
    """Answers examples (and any question about a text) with a causal LM read from ``model_path``."""

    def __init__(
        self,
        model_path: str | Path,
        max_new_tokens: int | None = None,
        window: int | None = None,
        device: str = "cpu",
        dtype: Any = None,
        context: str = "head",
        recall: bool = False,
    ) -> None:
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
        if recall and context == "scrolls":
            raise ValueError("recall replaces the document's head: use it with context='head'")
        self.tokenizer, self.model = load_causal_lm(model_path, device, dtype)
        config = self.model.config
        self.window = window or getattr(config, "max_position_embeddings", None) or config.n_positions
        self.max_new_tokens, self.context, self.recall = max_new_tokens, context, recall
        self._indexes: dict[str, PassageIndex] = {}

    def predict(self, example: Example) -> str:
        text, _ = self.answer(example.document, example.question, TEMPLATES[example.task], self._tokens(example.task))
        return answer_text(example.task, text)

    def prompt_ids(self, example: Example) -> list[int]:
        return self.prompt(example.document, example.question, TEMPLATES[example.task], self._tokens(example.task)).ids

    def answer(self, document: str, question: str, template: str, max_new_tokens: int) -> tuple[str, str]:
        """(all the model wrote, the document text it was shown)."""
        prompt = self.prompt(document, question, template, max_new_tokens)
        return self.generate(prompt.ids, max_new_tokens), prompt.context

    def prompt(self, document: str, question: str, template: str, max_new_tokens: int) -> Prompt:
        """Token ids that fit the window with ``max_new_tokens`` to spare."""
        if self.context == "scrolls":
            example = Example("", "", document, question, [])
            ids = scrolls_prompt_ids(self.tokenizer, example, self.window, max_new_tokens, template)
            return Prompt(ids, document)
        before, after = prompts.split(template, question=question)
        head, tail = self._frame(before, after)
        budget = self.window - max_new_tokens - len(head) - len(tail)
        if budget <= 0:
            raise ValueError(f"a window of {self.window} tokens leaves no room for the document")
        text = None
        if self.recall:
            evidence = self._index(document).evidence(question, budget, self._count)
            text = None if evidence is None else evidence.text
        if text is None:  # no recall, or no passage shares a word with the question
            text = self._head(document, budget)
        ids = self._encode(text)[:budget]
        return Prompt(head + ids + tail, text)

    def choose(self, prompt: Prompt, names: Sequence[str]) -> str:
        """The one of `names` likeliest as the answer after `prompt`: the sum of its tokens'
        log-probabilities, as megadoc's name answers choose (megadoc.pipeline.session.Reader.ask)."""
        import torch

        device = self.model.device
        # transformers 5 renamed the key-value cache argument and output field `cache` (was `past_key_values`).
        key = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        with torch.inference_mode():
            out = self.model(torch.tensor([prompt.ids], device=device), use_cache=True)
            after_prompt = out.logits[0, -1].float().log_softmax(-1)
            scores = []
            for name in names:
                ids = self._answer_ids(name)
                total = float(after_prompt[ids[0]])
                if len(ids) > 1:
                    cache = copy.deepcopy(getattr(out, key))
                    inside = self.model(torch.tensor([ids[:-1]], device=device), **{key: cache}).logits
                    logprobs = inside[0].float().log_softmax(-1)
                    total += float(sum(logprobs[i, token] for i, token in enumerate(ids[1:])))
                scores.append(total)
        return max(zip(scores, names, strict=True))[1]

    def _answer_ids(self, text: str) -> list[int]:
        """`text` as the answer's first tokens: right after the chat template's assistant turn, or
        after "Answer:" (a space first) without one."""
        return self._encode(text if getattr(self.tokenizer, "chat_template", None) else " " + text)

    def generate(self, ids: list[int], max_new_tokens: int) -> str:
        import torch

        tensor = torch.tensor([ids], device=self.model.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.model.generate(
                tensor,
                attention_mask=torch.ones_like(tensor),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return self.tokenizer.decode(output[0, tensor.shape[1] :], skip_special_tokens=True)

    def _tokens(self, task: str) -> int:
        return self.max_new_tokens or ANSWER_TOKENS[task]

    def _frame(self, before: str, after: str) -> tuple[list[int], list[int]]:
        """Ids before and after the document: the prompt inside the chat template when there is one."""
        after = after.rstrip().removesuffix("Answer:").rstrip()  # the template's assistant turn cues the answer
        if getattr(self.tokenizer, "chat_template", None):
            message = [{"role": "user", "content": before + _SLOT + after}]
            framed = self.tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
            first, _, last = framed.partition(_SLOT)
            return self._encode(first), self._encode(last)
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        return bos + self._encode(before), self._encode(after + "\nAnswer:")

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _count(self, text: str) -> int:
        return len(self._encode(text))

    def _head(self, document: str, budget: int) -> str:
        """The document's first ``budget`` tokens, as text."""
        ids = self._encode(document[: budget * CHARS_PER_TOKEN_BOUND])[:budget]
        return self.tokenizer.decode(ids)

    def _index(self, document: str) -> PassageIndex:
        """megadoc's recall index of the document, in this model's tokens (built once per document)."""
        key = f"{len(document)}:{hash(document)}"
        if key not in self._indexes:
            encoded = self.tokenizer(document, add_special_tokens=False, return_offsets_mapping=True)
            doc = Document(document, [], source="eval", kind="text")
            self._indexes = {key: PassageIndex.build(doc, encoded["offset_mapping"], passage_size(self.window))}
        return self._indexes[key]
