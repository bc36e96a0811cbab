"""`megadoc eval ppl|copy|who|scrolls|compare`."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from megadoc.cli.common import (
    DEFAULT_NO_REPEAT_NGRAM,
    DeviceOption,
    MaxTokensOption,
    ModelOption,
    NamesOption,
    NoRepeatOption,
    UsageError,
    eval_app,
    generation,
    load,
    stderr,
    stdout,
    user_errors,
)
from megadoc.display import one_line
from megadoc.pipeline import registry
from megadoc.pipeline.progress import ProgressBar
from megadoc.pipeline.session import ProgressCallback, Reader


@eval_app.command("ppl")
def eval_ppl(
    files: Annotated[list[str], typer.Argument(help="Held-out texts (any format `ask` reads), never trained on.")],
    context: Annotated[str, typer.Option(help="Comma-separated context lengths in tokens.")] = "1024,4096,16384,65536",
    model: ModelOption = registry.DEFAULT_MODEL,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Bits per byte at each context length, on the same final tokens of each text.

    Let T be the smallest context length given. At context length N, a fresh state reads BOS and
    the last N tokens of a text; the loss counted is the loss on the text's final T tokens only,
    so every N scores the same tokens and differs only in how much text came before them. Bits per
    byte = summed loss in nats / ln 2 / UTF-8 bytes of those tokens' text, over every text of at
    least N tokens (shorter texts are left out at that N; the output says how many were used).

    Example: megadoc eval ppl heldout/*.txt --context 1024,4096,16384,65536 --json
    """
    from megadoc.evals.perplexity import bits_per_byte

    with user_errors():
        contexts = _context_lengths(context)
        texts = [load(source, None).text for source in files]
        loaded = registry.load(model, registry.choose_device(device))
        results = bits_per_byte(loaded.model, loaded.tokenizer, texts, contexts)
    if as_json:
        row = {
            "model": loaded.name,
            "files": files,
            "target_tokens": min(contexts),
            "results": [r.to_dict() for r in results],
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(caption=f"loss on the final {min(contexts):,} tokens of each text")
    for column in ("context", "bits/byte", "texts", "bytes"):
        table.add_column(column, justify="right")
    for r in results:
        value = "n/a (no text that long)" if r.bits_per_byte is None else f"{r.bits_per_byte:.4f}"
        table.add_row(f"{r.context:,}", value, str(r.texts), f"{r.bytes:,}")
    stdout.print(table)


def _context_lengths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--context takes comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError("--context needs at least one positive length")
    return sorted(set(values))


@eval_app.command("copy")
def eval_copy(
    files: Annotated[list[str], typer.Argument(help="Texts to take passages from (any format `ask` reads).")],
    passage_tokens: Annotated[int, typer.Option(help="Tokens per passage (read twice in one attention chunk).")] = 256,
    passages: Annotated[int, typer.Option(help="Passages per text, evenly spaced.")] = 8,
    model: ModelOption = registry.DEFAULT_MODEL,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """The repeat test: loss on passages read once, then read again right after.

    A model that copies from what its attention holds (as answering from recalled passages needs)
    scores the second reading far below the first; one that cannot scores them alike.

    Example: megadoc eval copy heldout/*.txt --json
    """
    from megadoc.evals.perplexity import repeat_loss

    with user_errors():
        texts = [load(source, None).text for source in files]
        loaded = registry.load(model, registry.choose_device(device))
        try:
            result = repeat_loss(loaded.model, loaded.tokenizer, texts, passage_tokens, passages)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if as_json:
        sys.stdout.write(json.dumps({"model": loaded.name, "files": files, **result.to_dict()}) + "\n")
        return
    table = Table(caption=f"{result.passages} passages of {result.passage_tokens} tokens")
    for column in ("first reading (nats/token)", "second reading", "gain"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.first:.3f}", f"{result.second:.3f}", f"{result.first - result.second:.3f}")
    stdout.print(table)


EngineRecallOption = Annotated[
    bool | None,
    typer.Option(
        "--recall/--no-recall",
        help="Answer from the passages that best match the question (megadoc's recall; default for "
        "megadoc) or without them (default for hf: the document's head).",
    ),
]
ContextOption = Annotated[
    str,
    typer.Option(
        help="For --engine hf: head (the document's first tokens up to the window, in the chat template) "
        "or scrolls (SCROLLS' baseline prompt, no chat template)."
    ),
]
WindowOption = Annotated[
    int | None, typer.Option(min=64, help="For --engine hf: tokens of context (default: the model's window).")
]


@eval_app.command("who")
def eval_who(
    books: Annotated[Path, typer.Option(help="Folder of the books (<name>.txt or <name>.txt.gz), e.g. shared books/.")],
    questions: Annotated[
        Path | None, typer.Option(help="Questions JSON (default: megadoc's own, about held-out novels).")
    ] = None,
    model: ModelOption = registry.DEFAULT_MODEL,
    engine: Annotated[str, typer.Option(help="megadoc, or hf (--model: a Hugging Face directory or .gguf file).")] = (
        "megadoc"
    ),
    context: ContextOption = "head",
    window: WindowOption = None,
    device: DeviceOption = "auto",
    recall: EngineRecallOption = None,
    max_tokens: MaxTokensOption = 24,
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    names: NamesOption = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the table.")] = False,
) -> None:
    """Who-questions about novels: does the answer name the right character? Beside the model, the
    floor of naming the book's most frequent character in what the model could see (megadoc: the
    recalled passages), and how often that text names a right answer at all.

    Example: megadoc eval who --books ../shared/data/books --json
    """
    from megadoc.evals.runner import peak_memory_bytes
    from megadoc.evals.who import HFAsker, MegadocAsker, load_questions, run_who

    with user_errors():
        try:
            asked = load_questions(questions)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise UsageError(f"{questions}: not a who-questions file ({one_line(error)})") from None
        bar = ProgressBar(stderr, "questions", unit="questions")
        if engine == "megadoc":
            recall = True if recall is None else recall
            loaded = registry.load(model, registry.choose_device(device))
            config = generation(max_tokens, 0.0, None, no_repeat_ngram)
            asker = MegadocAsker(Reader(loaded, cache=None), config, recall, bar.read, names)
            name = loaded.name
        elif engine == "hf":
            if context != "head":
                raise UsageError("eval who --engine hf reads --context head (the app's question prompt)")
            recall = bool(recall)
            predictor = _hf_predictor(model, device, context, recall, window, max_tokens)
            asker, name = HFAsker(predictor, max_tokens, names), model
        else:
            raise UsageError(f"--engine must be megadoc or hf, not {engine!r}")
        start = time.perf_counter()
        try:
            with bar:
                results = run_who(asker, books, asked, on_progress=bar.update)
        except FileNotFoundError as error:
            raise UsageError(one_line(error)) from None
        seconds = time.perf_counter() - start
    correct = sum(r.correct for r in results)
    floor = sum(r.floor_correct for r in results)
    in_evidence = sum(r.in_evidence for r in results)
    mode = _mode(engine, recall, context)
    if as_json:
        row = {
            "model": name,
            "engine": engine,
            "recall": recall,
            "mode": mode,
            "no_repeat_ngram": no_repeat_ngram if engine == "megadoc" else None,
            "names": names,
            "count": len(results),
            "correct": correct,
            "floor_correct": floor,
            "in_evidence": in_evidence,
            "seconds": seconds,
            "peak_memory_bytes": peak_memory_bytes(),
            "results": [r.to_dict() for r in results],
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(
        caption=f"{name} ({mode}): {correct} of {len(results)} right; "
        f"most frequent name in what it saw: {floor}; a right name is in that text: {in_evidence}"
    )
    for column in ("question", "answer", "right", "floor", "in passages"):
        table.add_column(column)
    for r in results:
        floor_cell = f"{r.floor_answer} ({'yes' if r.floor_correct else 'no'})"
        table.add_row(r.question, r.answer, "yes" if r.correct else "no", floor_cell, "yes" if r.in_evidence else "no")
    stdout.print(table)


def _mode(engine: str, recall: bool | None, context: str, layout: str = "scrolls") -> str | None:
    if engine == "megadoc":
        return ("app-" if layout == "app" else "") + ("recall" if recall else "plain")
    if engine == "hf":
        return "recall" if recall else context
    return None


@eval_app.command("scrolls")
def eval_scrolls(
    task: Annotated[str, typer.Option(help="narrativeqa, qasper, qmsum, squality or fairytaleqa.")],
    data: Annotated[
        Path,
        typer.Option(
            help="The task's files: a SCROLLS .jsonl; NarrativeQA's full-story .jsonl.gz or official folder; "
            "L-Eval's scientific_qa.jsonl or Qasper's JSON; QMSum's meeting folder; SQuALITY's .jsonl(.gz); "
            "FairytaleQA's .tar.gz or folder."
        ),
    ],
    split: Annotated[
        str, typer.Option(help="Split, for the original NarrativeQA, Qasper and FairytaleQA files.")
    ] = "validation",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N examples.")] = None,
    attribute: Annotated[
        str | None,
        typer.Option(help="Only FairytaleQA's questions of this attribute: character, setting, action, feeling, ..."),
    ] = None,
    model: ModelOption = registry.DEFAULT_MODEL,
    engine: Annotated[
        str,
        typer.Option(
            help="megadoc; the floors lead (the first 10 sentences), majority (the most frequent training "
            "answer) and name (the story's most frequent character name); hf (--model: a Hugging Face "
            "directory or .gguf file) or vllm."
        ),
    ] = "megadoc",
    train_data: Annotated[
        Path | None,
        typer.Option(help="Training examples for --engine majority (default: --data's train split)."),
    ] = None,
    recall: EngineRecallOption = None,
    layout: Annotated[
        str,
        typer.Option(
            help="For --engine megadoc: scrolls (SCROLLS' input, the question before the document, read for "
            "each question) or app (the document read once, then the question, as `megadoc ask` does)."
        ),
    ] = "scrolls",
    names: NamesOption = True,
    context: ContextOption = "head",
    window: WindowOption = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Answer length (default by task).")
    ] = None,
    device: DeviceOption = "auto",
    no_repeat_ngram: NoRepeatOption = DEFAULT_NO_REPEAT_NGRAM,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Per-example JSONL (resumable); default scrolls-<task>-<model>-<mode>.jsonl in megadoc's "
            "results folder (MEGADOC_RESULTS_DIR, else the user data directory)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the Markdown table.")] = False,
) -> None:
    """Score a model on a long-document task with its official-style metric; our row beside the papers'.

    Example: megadoc eval scrolls --task qmsum --data data/qmsum/val --limit 20
    """
    from megadoc.evals.metrics import TASKS
    from megadoc.evals.report import results_table
    from megadoc.evals.runner import peak_memory_bytes, results_dir, run_eval

    with user_errors():
        if task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
        if attribute is not None and task != "fairytaleqa":
            raise UsageError(f"--attribute chooses FairytaleQA's question types; {task} has none")
        if layout != "scrolls" and engine != "megadoc":
            raise UsageError(f"--layout chooses megadoc's reading; --engine {engine} has none")
        examples = _scrolls_examples(task, data, split)
        if attribute is not None:
            examples = _of_attribute(examples, attribute)
        if engine == "megadoc":
            recall = True if recall is None else recall
        elif engine == "hf":
            recall = bool(recall)
        bar = ProgressBar(stderr, "examples", unit="examples")
        if engine == "majority":
            predictor, name = _majority_predictor(task, train_data or data)
        else:
            predictor, name = _predictor(
                engine, model, device, recall, max_tokens, no_repeat_ngram, context, window, bar.read, layout, names
            )
        mode = _mode(engine, recall, context, layout)
        stem = (
            f"scrolls-{task}-{Path(name).name}" + (f"-{mode}" if mode else "") + (f"-{attribute}" if attribute else "")
        )
        target = out or results_dir() / f"{stem}.jsonl".replace(" ", "-")
        stderr.print(f"per-example rows go to {target}", style="dim")
        with bar:
            summary = run_eval(task, examples, predictor, target, limit=limit, on_progress=bar.update)
    if as_json:
        row = {
            "task": task,
            "model": name,
            "engine": engine,
            "recall": recall if engine in ("megadoc", "hf") else None,
            "mode": mode,
            "attribute": attribute,
            "window": getattr(predictor, "window", None) if engine == "hf" else None,
            "no_repeat_ngram": no_repeat_ngram if engine == "megadoc" else None,
            "names": names if engine == "megadoc" and layout == "app" else None,
            "count": summary.count,
            "score": summary.score,
            "metrics": summary.metrics,
            "seconds": summary.seconds,
            "seconds_per_example": summary.seconds / summary.count if summary.count else None,
            "peak_memory_bytes": peak_memory_bytes(),
            "out": str(target),
        }
        sys.stdout.write(json.dumps(row) + "\n")
        return
    sys.stdout.write(results_table(task, {name: summary.score}))
    stderr.print(f"{summary.count} examples, {summary.seconds:.1f} s; per-example rows in {target}", style="dim")


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="Per-example JSONL of run A (from `eval scrolls --out`).")],
    run_b: Annotated[Path, typer.Argument(help="Per-example JSONL of run B.")],
    task: Annotated[str, typer.Option(help="narrativeqa, qasper, qmsum, squality or fairytaleqa.")],
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Is A better than B? Both scores on their shared examples and a paired bootstrap 95% interval of A - B.

    Example: megadoc eval compare qmsum-recall.jsonl qmsum-plain.jsonl --task qmsum
    """
    from megadoc.evals.metrics import TASKS
    from megadoc.evals.report import paired_bootstrap

    with user_errors():
        if task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
        rows_a, rows_b = _run_metrics(run_a), _run_metrics(run_b)
        try:
            result = paired_bootstrap(task, rows_a, rows_b, resamples=resamples)
        except (ValueError, KeyError) as error:
            raise UsageError(f"cannot compare {run_a} and {run_b}: {one_line(error)}") from None
    if as_json:
        sys.stdout.write(json.dumps({**asdict(result), "difference": result.difference}) + "\n")
        return
    sys.stdout.write(
        f"{result.count} shared examples: A {result.score_a:.2f}, B {result.score_b:.2f}, "
        f"A - B {result.difference:+.2f} (95% interval {result.low:+.2f} to {result.high:+.2f})\n"
    )


def _run_metrics(path: Path) -> dict[str, dict[str, float]]:
    """Example id -> metrics from a per-example JSONL."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {row["id"]: row["metrics"] for row in rows}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not a per-example results file ({one_line(error)})") from None


def _scrolls_examples(task: str, data: Path, split: str) -> list:
    from megadoc.evals.datasets import load_examples

    try:
        return load_examples(task, data, split)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
        raise UsageError(f"{data}: cannot load {task} examples ({one_line(error)})") from None


def _majority_predictor(task: str, train_data: Path):
    from megadoc.evals.baselines import MajorityAnswerBaseline

    train = _scrolls_examples(task, train_data, "train")
    try:
        baseline = MajorityAnswerBaseline.from_examples(train)
    except ValueError:
        raise UsageError(
            f"--engine majority needs training answers: none in the train split of {train_data} (see --train-data)"
        ) from None
    return baseline, f"majority answer ({baseline.answer!r})"


def _predictor(
    engine: str,
    model: str,
    device: str,
    recall: bool | None,
    max_tokens: int | None,
    no_repeat_ngram: int,
    context: str,
    window: int | None,
    on_read: ProgressCallback | None = None,
    layout: str = "scrolls",
    names: bool = True,
):
    if engine == "megadoc":
        from megadoc.evals.predictor import LAYOUTS, MegalodonPredictor

        if layout not in LAYOUTS:
            raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")

        loaded = registry.load(model, registry.choose_device(device))
        reader = Reader(loaded, cache=None)
        predictor = MegalodonPredictor(reader, bool(recall), max_tokens, no_repeat_ngram, on_read, layout, names)
        return predictor, f"{loaded.name} ({_mode(engine, recall, context, layout)})"
    if engine == "lead":
        from megadoc.evals.baselines import LeadBaseline

        return LeadBaseline(), "lead-10 (first 10 sentences)"
    if engine == "name":
        from megadoc.evals.baselines import MostFrequentNameBaseline

        return MostFrequentNameBaseline(), "most frequent name"
    if engine == "hf":
        return _hf_predictor(model, device, context, bool(recall), window, max_tokens), model
    if engine != "vllm":
        raise UsageError(f"--engine must be megadoc, lead, majority, name, hf or vllm, not {engine!r}")
    if not Path(model).is_dir():
        raise UsageError("--engine vllm needs --model DIR (a Hugging Face model directory)")
    from megadoc.evals.baselines import VLLMPredictor

    try:
        return VLLMPredictor(model, max_new_tokens=max_tokens), model
    except (ImportError, OSError, ValueError) as error:
        raise UsageError(f"--engine vllm: {one_line(error)}") from None


def _of_attribute(examples: list, attribute: str) -> list:
    """FairytaleQA's questions whose first attribute (its annotators' question type) is ``attribute``."""
    chosen = [example for example in examples if example.meta.get("attribute") == attribute]
    if not chosen:
        found = sorted({example.meta.get("attribute") for example in examples} - {"", None})
        raise UsageError(f"no question has the attribute {attribute!r}; these have: {', '.join(found)}")
    return chosen


def _hf_predictor(model: str, device: str, context: str, recall: bool, window: int | None, max_tokens: int | None):
    from megadoc.evals.hf import CONTEXTS, HFPredictor

    path = Path(model)
    if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
        raise UsageError(
            f"--engine hf needs --model PATH: a Hugging Face model directory or a .gguf file, not {model!r}"
        )
    if context not in CONTEXTS:
        raise UsageError(f"--context must be one of {', '.join(CONTEXTS)}, not {context!r}")
    try:
        return HFPredictor(
            path, max_tokens, window, str(registry.choose_device(device)), context=context, recall=recall
        )
    except (ImportError, OSError, ValueError) as error:
        raise UsageError(f"--engine hf: {one_line(error)}") from None
