"""SQuALITY (github.com/nyu-mll/SQuALITY, v1.3 txt): question-focused summaries of whole stories.

One story a line: ``{"metadata": {"passage_id", "uid", ...}, "document", "questions": [{"question_text",
"question_number", "responses": [{"response_text", ...}]}]}``; each question's 4 responses are its
references.
"""

from pathlib import Path

from megadoc.evals.scrolls import Example, jsonl_rows


def load_squality(path: str | Path) -> list[Example]:
    """One example per question, ids ``<passage_id>/<question_number>``."""
    path = Path(path)
    examples = []
    for row in jsonl_rows(path):
        story = row["metadata"]["passage_id"]
        for question in row["questions"]:
            references = [r["response_text"].strip() for r in question["responses"] if r["response_text"].strip()]
            examples.append(
                Example(
                    f"{story}/{question['question_number']}",
                    "squality",
                    row["document"],
                    question["question_text"],
                    references,
                    {"passage_id": story},
                )
            )
    if not examples:
        raise ValueError(f"{path}: no SQuALITY stories")
    return examples
