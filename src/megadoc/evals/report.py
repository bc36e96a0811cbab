"""Our scores beside published ones, and paired comparisons of two runs."""

import random
from collections.abc import Mapping
from dataclasses import dataclass

from megadoc.evals.metrics import task_metrics

# Megalodon paper, SCROLLS validation: NarrativeQA F1, Qasper F1, QMSum ROUGE geometric mean.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "Megalodon-7B": {"narrativeqa": 23.9, "qasper": 28.0, "qmsum": 13.1},
    "Llama-2-7B": {"narrativeqa": 18.8, "qasper": 19.8, "qmsum": 10.1},
    "Llama-2-7B-Long": {"narrativeqa": 23.5, "qasper": 28.3, "qmsum": 14.5},
    "Yarn-7B-128K": {"narrativeqa": 20.9, "qasper": 26.2, "qmsum": 11.4},
    "MPT-7B": {"narrativeqa": 18.8, "qasper": 24.7, "qmsum": 8.8},
    "Xgen-7B": {"narrativeqa": 17.4, "qasper": 20.5, "qmsum": 6.8},
}
# L-Eval's leaderboard (github.com/OpenLMLab/LEval, Leaderboard/f1_LEval_leaderboard.csv), scientific_qa
# F1: the same 184 questions as our Qasper rows (the SCROLLS rows above are another question set).
LEVAL_RESULTS: dict[str, dict[str, float]] = {
    "turbo-16k-0613 (L-Eval)": {"qasper": 28.25},
    "retrieval-turbo-0613, BM25 (L-Eval)": {"qasper": 25.83},
    "xgen-7b-8k-inst (L-Eval)": {"qasper": 6.99},
}
HEADERS = {
    "narrativeqa": "NarrativeQA (F1)",
    "qasper": "Qasper (F1)",
    "qmsum": "QMSum (R-1/2/L geo. mean)",
    "squality": "SQuALITY (R-1/2/L geo. mean)",
    "fairytaleqa": "FairytaleQA (ROUGE-L F1)",
}


def results_table(task: str, rows: Mapping[str, float]) -> str:
    """A Markdown table of one task: our rows (model name -> score), then the published rows that
    have the task (SCROLLS-set numbers beside reconstructed or L-Eval sets are for scale only)."""
    lines = [f"| model | source | {HEADERS[task]} |", "|---|---|---:|"]
    lines += [f"| {name} | ours | {score:.1f} |" for name, score in rows.items()]
    for source, table in (("paper (SCROLLS)", PAPER_RESULTS), ("L-Eval", LEVAL_RESULTS)):
        lines += [f"| {name} | {source} | {scores[task]:.1f} |" for name, scores in table.items() if task in scores]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Comparison:
    """Run A minus run B on the examples both scored, with a paired bootstrap interval."""

    task: str
    count: int
    score_a: float
    score_b: float
    low: float  # 2.5th percentile of the resampled differences
    high: float  # 97.5th percentile

    @property
    def difference(self) -> float:
        return self.score_a - self.score_b


def paired_bootstrap(
    task: str,
    rows_a: Mapping[str, Mapping[str, float]],
    rows_b: Mapping[str, Mapping[str, float]],
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two runs' per-example metrics (example id -> metrics) on their shared ids: the task's
    score of each, and a 95% interval of A - B over `resamples` resamplings of the examples (the
    same examples for both runs, aggregated the SCROLLS way each time)."""
    shared = sorted(rows_a.keys() & rows_b.keys())
    if not shared:
        raise ValueError("the two runs share no example ids")
    rng = random.Random(seed)
    differences = []
    for _ in range(resamples):
        sample = [rng.choice(shared) for _ in shared]
        differences.append(
            task_metrics(task, [rows_a[i] for i in sample])["score"]
            - task_metrics(task, [rows_b[i] for i in sample])["score"]
        )
    differences.sort()
    return Comparison(
        task=task,
        count=len(shared),
        score_a=task_metrics(task, [rows_a[i] for i in shared])["score"],
        score_b=task_metrics(task, [rows_b[i] for i in shared])["score"],
        low=differences[int(0.025 * (resamples - 1))],
        high=differences[int(0.975 * (resamples - 1))],
    )
