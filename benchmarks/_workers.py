"""Benchmark workers: each backend or configuration timed in a process of its own.

Keras fixes its backend at import, and TensorFlow its XLA dump and legacy
Keras flags, so a benchmark times each one in a fresh process: the script
runs itself with `--worker ...` (`run_worker`), and the worker prints its
result with `report`, on a line of its own that later output (a library's
messages on stdout) cannot be mistaken for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The prefix of the worker's result line.
MARKER = "RESULT "


def report(result: Any) -> None:
    """Prints `result` (JSON-serializable) as the worker's result line."""
    print(MARKER + json.dumps(result), flush=True)


def run_worker(
    script: str | Path,
    args=(),
    *,
    label: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Any:
    """Runs `python script --worker *args` and returns what it `report`ed.

    Args:
        script: the benchmark script (its `__file__`).
        args: the worker's arguments after `--worker`, converted with `str`.
        label: names the worker in the error if it fails.
        env: variables set on top of this process's environment (such as
            `KERAS_BACKEND`); TensorFlow's C++ logging is quiet unless set.
        cwd: the worker's working directory.

    Returns:
        The JSON value of the worker's last result line.

    Raises:
        SystemExit: when the worker fails or reports nothing, with the end
            of its stderr.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    command = [sys.executable, str(script), "--worker", *map(str, args)]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    lines = [x for x in done.stdout.splitlines() if x.startswith(MARKER)]
    if done.returncode or not lines:
        sys.exit(
            f"{label}: the worker failed (exit {done.returncode}):\n"
            f"{done.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(MARKER) :])
