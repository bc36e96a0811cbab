"""Metrics of the long-document tasks: SCROLLS' for NarrativeQA, Qasper (token F1) and QMSum
(ROUGE), the same ROUGE for SQuALITY (R-1/2/L, each the best of the 4 references, as SQuALITY's
multi_rouge does), and ROUGE-L F1 for FairytaleQA (as its paper; the best over the references).

Matches the official SCROLLS metric (huggingface.co/datasets/tau/scrolls,
metrics/scrolls.py, f1.py, rouge.py; mirrored in github.com/tau-nlp/scrolls):

- F1 is SQuAD v1.1's: normalize (lower-case, drop punctuation, drop a/an/the,
  collapse white space), count shared tokens; the best over the references.
- ROUGE is Google's rouge-score with ``use_stemmer=False`` (scrolls.py passes it
  explicitly), F-measure. Per example and per ROUGE type, the best over the
  references; each type is averaged over examples, times 100; the SCROLLS score is
  the geometric mean of the averaged rouge1, rouge2 and rougeL (not the mean of
  per-example geometric means).
- SCROLLS splits texts into sentences with nltk and joins them with newlines, but
  only rougeLsum reads newlines, and rougeLsum is not part of the score: rougeL is
  the sentence-level LCS that ignores newlines. So we skip that step (and nltk's
  punkt data) without changing any number.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
F1_TASKS = frozenset({"narrativeqa", "qasper"})
ROUGE_TASKS = frozenset({"qmsum", "squality"})
ROUGE_L_TASKS = frozenset({"fairytaleqa"})
TASKS = ("narrativeqa", "qasper", "qmsum", "squality", "fairytaleqa")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower-case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """Token-level F1 in [0, 1] after normalization (0 when either side is empty)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, references: Iterable[str]) -> float:
    """The best token F1 over the references (0 when there are none)."""
    return max((token_f1(prediction, reference) for reference in references), default=0.0)


@cache
def _scorer(use_stemmer: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def rouge_scores(prediction: str, reference: str, use_stemmer: bool = False) -> dict[str, float]:
    """ROUGE-1/2/L F-measures in [0, 1]; ``use_stemmer=False`` as SCROLLS scores."""
    scores = _scorer(use_stemmer).score(reference, prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


def max_rouge(prediction: str, references: Iterable[str], use_stemmer: bool = False) -> dict[str, float]:
    """Per ROUGE type, the best F-measure over the references (types maximized independently)."""
    per_reference = [rouge_scores(prediction, reference, use_stemmer) for reference in references]
    return {name: max((s[name] for s in per_reference), default=0.0) for name in ROUGE_TYPES}


def qmsum_score(scores: Mapping[str, float]) -> float:
    """Geometric mean of rouge1, rouge2, rougeL given in [0, 1], times 100 (SCROLLS' QMSum number;
    SQuALITY's headline here too, beside its three ROUGEs)."""
    return 100 * math.prod(scores[name] for name in ROUGE_TYPES) ** (1 / 3)


def example_metrics(task: str, prediction: str, references: Sequence[str]) -> dict[str, float]:
    """What one example contributes to its task's score, in [0, 1]."""
    if task in F1_TASKS:
        return {"f1": max_f1(prediction, references)}
    if task in ROUGE_TASKS:
        return max_rouge(prediction, references)
    if task in ROUGE_L_TASKS:
        return {"rougeL": max_rouge(prediction, references)["rougeL"]}
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def example_score(task: str, metrics: Mapping[str, float]) -> float:
    """One example's score on the task's 0-100 scale (a per-example view; see task_metrics)."""
    if task in ROUGE_TASKS:
        return qmsum_score(metrics)
    return 100 * metrics["rougeL" if task in ROUGE_L_TASKS else "f1"]


def task_metrics(task: str, per_example: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Aggregate per-example metrics the SCROLLS way; ``score`` is the task's headline number (0-100)."""
    if not per_example:
        raise ValueError("no examples to aggregate")
    means = {key: 100 * sum(m[key] for m in per_example) / len(per_example) for key in per_example[0]}
    if task in ROUGE_TASKS:
        means["score"] = math.prod(means[name] for name in ROUGE_TYPES) ** (1 / 3)
    elif task in F1_TASKS:
        means["score"] = means["f1"]
    elif task in ROUGE_L_TASKS:
        means["score"] = means["rougeL"]
    else:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return means
