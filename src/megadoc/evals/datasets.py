"""Examples of any long-document task from the files a user has: which loader reads which layout."""

from pathlib import Path

from megadoc.evals import fairytaleqa, leval, scrolls, squality
from megadoc.evals.metrics import TASKS


def load_examples(task: str, data: Path, split: str = "validation") -> list[scrolls.Example]:
    """The examples of ``task`` in ``data``.

    - narrativeqa: SCROLLS' jsonl, the full-story ``*.jsonl.gz`` of ../shared/data, or the official
      folder (documents.csv, qaps.csv, stories);
    - qasper: SCROLLS' jsonl, L-Eval's ``scientific_qa.jsonl``, or Qasper's official JSON;
    - qmsum: SCROLLS' jsonl or QMSum's folder of meeting JSON files;
    - squality: SQuALITY's ``.jsonl`` (or ``.jsonl.gz``);
    - fairytaleqa: the ``.tar.gz`` as distributed, or its unpacked folder (``split`` chooses).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if task == "squality":
        return squality.load_squality(data)
    if task == "fairytaleqa":
        return fairytaleqa.load_fairytaleqa(data, split)
    if data.is_file() and data.name.endswith((".jsonl", ".jsonl.gz")):
        first = next(scrolls.jsonl_rows(data), None)
        if first is None:
            raise ValueError(f"{data}: empty")
        if leval.is_leval(first):
            return leval.load_leval(data, task)
        if task == "narrativeqa" and "qas" in first:
            return scrolls.load_narrativeqa_fullstory(data)
        return scrolls.load_scrolls_jsonl(data, task)
    if task == "qmsum":
        return scrolls.load_qmsum(data)
    if task == "narrativeqa":
        return scrolls.load_narrativeqa(data, split)
    return scrolls.load_qasper(data, split)
