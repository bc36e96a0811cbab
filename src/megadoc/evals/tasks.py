"""What each long-document task asks of a predictor: its prompt template and its answer's length."""

from megadoc.evals.metrics import TASKS

# prompts/<template>.txt: SCROLLS' layout (question, blank line, document), then the question again.
TEMPLATES = {
    "narrativeqa": "scrolls_narrativeqa",
    "qasper": "scrolls_qasper",
    "qmsum": "scrolls_qmsum",
    "squality": "scrolls_squality",
    "fairytaleqa": "scrolls_narrativeqa",  # also a few words about a story
}
# The app's own prompts (the document read alone, the question after it): `megadoc ask`, and
# `megadoc summarize --query` for the tasks whose answers are summaries.
APP_TEMPLATES = {
    "narrativeqa": "qa",
    "qasper": "qa",
    "qmsum": "query_summary",
    "squality": "query_summary",
    "fairytaleqa": "qa",
}
# Answer lengths in tokens: a few words for the QA tasks, a paragraph for the summaries.
ANSWER_TOKENS = {"narrativeqa": 64, "qasper": 64, "qmsum": 256, "squality": 256, "fairytaleqa": 32}
_SUMMARY_TASKS = frozenset({"qmsum", "squality"})
assert set(TEMPLATES) == set(APP_TEMPLATES) == set(ANSWER_TOKENS) == set(TASKS)


def answer_text(task: str, generated: str) -> str:
    """QA answers are their first line (as SCROLLS scores them); a summary is all the model wrote."""
    text = generated.strip()
    return text if task in _SUMMARY_TASKS else text.split("\n", 1)[0].strip()
