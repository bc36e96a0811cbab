"""L-Eval's open-ended long-document sets (github.com/OpenLMLab/LEval), one document a line:
``{"instructions": [q, ...], "outputs": [a, ...], "input": document, "source", "evaluation"}``.

``scientific_qa`` (23 Qasper papers, 184 questions) is the only Qasper material here: loaded as the
``qasper`` task and scored with Qasper's token F1; it is not the Qasper/SCROLLS validation split.
"""

from pathlib import Path

from megadoc.evals.scrolls import Example, jsonl_rows


def is_leval(row: dict) -> bool:
    """Whether a jsonl row is L-Eval's (rather than SCROLLS' id/input/output)."""
    return "instructions" in row and "outputs" in row


def load_leval(path: str | Path, task: str) -> list[Example]:
    """One example per instruction; its one output is the reference. Ids are ``<line>/<number>``."""
    path = Path(path)
    examples = []
    for line, row in enumerate(jsonl_rows(path)):
        if not is_leval(row):
            raise ValueError(f"{path}: line {line + 1} is not an L-Eval row (no instructions/outputs)")
        if len(row["instructions"]) != len(row["outputs"]):
            raise ValueError(
                f"{path}: line {line + 1} has {len(row['instructions'])} instructions but {len(row['outputs'])} outputs"
            )
        meta = {"source": row.get("source", path.stem), "document": line}
        for number, (question, answer) in enumerate(zip(row["instructions"], row["outputs"], strict=True)):
            examples.append(Example(f"{line}/{number}", task, row["input"], question, [answer], meta))
    if not examples:
        raise ValueError(f"{path}: no L-Eval rows")
    return examples
