"""Real processes: Ctrl-C (SIGINT) during a long read keeps what was read and the next run resumes;
two processes reading the same document at once share one read through the cache lock."""

import os
import re
import signal
import subprocess
import sys
import time

from tests.helpers import AUSTEN, json_rows, run_cli

MEGADOC = [sys.executable, "-c", "from megadoc.cli import main; main()"]


def _start(*args, cache):
    """`megadoc ARGS` as a child process whose Ctrl-C behaves as in a terminal, even where this
    process ignores SIGINT (as a shell's background job does, and its children inherit)."""
    env = {**os.environ, "MEGADOC_CACHE_DIR": str(cache)}
    command = [*MEGADOC, *map(str, args)]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_saves_the_read_and_the_next_run_resumes(app_env, tiny_model_dir, tmp_path):
    book = tmp_path / "long.txt"
    book.write_text(AUSTEN * 3, encoding="utf-8")
    process = _start("ask", book, "Who is Anne?", "--model", tiny_model_dir, "--device", "cpu", cache=app_env)
    deadline = time.monotonic() + 60
    while not list((app_env / "states").glob("*.state")):  # the first checkpoint: reading is under way
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr
    saved = re.fullmatch(r"interrupted; (\d+) tokens read are saved, run again to resume", stderr.strip())
    assert saved, stderr
    tokens_saved = int(saved.group(1))

    resumed = run_cli("ask", book, "Who is Anne?", "--model", tiny_model_dir, "--max-tokens", "3", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    [row] = json_rows(resumed.stdout)
    total = row["document"]["tokens"]
    assert row["cache"] == "resumed" and 0 < tokens_saved < total
    assert row["tokens_read"] == total // 16 * 16 - tokens_saved


def test_two_processes_reading_one_document_read_it_once(app_env, tiny_model_dir, tmp_path):
    book = tmp_path / "shared.txt"
    book.write_text(AUSTEN * 2, encoding="utf-8")
    args = ("ask", book, "Who?", "--model", tiny_model_dir, "--device", "cpu", "--max-tokens", "2", "--json")
    processes = [_start(*args, cache=app_env) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    statuses = sorted(json_rows(stdout)[0]["cache"] for stdout, _ in results)
    assert statuses == ["cached", "read"]
    assert len(list((app_env / "states").glob("*.state"))) == 1
