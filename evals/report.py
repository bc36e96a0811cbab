"""Our SCROLLS scores beside the Megalodon paper's table (validation sets)."""

from collections.abc import Mapping

from megadoc.evals.metrics import TASKS

# Megalodon paper, SCROLLS validation: NarrativeQA F1, Qasper F1, QMSum ROUGE geometric mean.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "Megalodon-7B": {"narrativeqa": 23.9, "qasper": 28.0, "qmsum": 13.1},
    "Llama-2-7B": {"narrativeqa": 18.8, "qasper": 19.8, "qmsum": 10.1},
    "Llama-2-7B-Long": {"narrativeqa": 23.5, "qasper": 28.3, "qmsum": 14.5},
    "Yarn-7B-128K": {"narrativeqa": 20.9, "qasper": 26.2, "qmsum": 11.4},
    "MPT-7B": {"narrativeqa": 18.8, "qasper": 24.7, "qmsum": 8.8},
    "Xgen-7B": {"narrativeqa": 17.4, "qasper": 20.5, "qmsum": 6.8},
}
_HEADERS = {"narrativeqa": "NarrativeQA (F1)", "qasper": "Qasper (F1)", "qmsum": "QMSum (R-1/2/L geo. mean)"}


def results_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table: our rows (model name -> {task: score}), then the paper's rows.

    A task a row has no score for shows as "–".
    """
    lines = [
        "| model | source | " + " | ".join(_HEADERS[task] for task in TASKS) + " |",
        "|---|---|" + "---:|" * len(TASKS),
    ]
    for source, table in (("ours", rows), ("paper", PAPER_RESULTS)):
        for name, scores in table.items():
            cells = [f"{scores[task]:.1f}" if task in scores else "–" for task in TASKS]
            lines.append(f"| {name} | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
