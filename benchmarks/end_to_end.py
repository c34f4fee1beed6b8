"""Wall time of the jobs a user runs, for this checkout and another one.

Jobs (each in a fresh process, so import and compilation count where a
user pays them):

- `demo`: `examples/demo_mnist.py` with its defaults (what `make demo` runs);
- `tune_trial`: `examples/tune_mnist.py --trials 1 --final-epochs 1` (one
  search trial of 3 epochs on 20,000 images, then the best retrained for an
  epoch);
- `pgd`: PGD-20 (linf 0.1) on the 10,000 test images, timed after a warm-up
  call on 500 (the compiled attack is then reused, as in an evaluation);
- `epoch`: one epoch of a full-budget reproduction run (the linf penalty
  on all 60,000 training images, batch 128, Adam), timed after a first
  epoch that compiles;
- `first_epoch`: that run's first epoch, tracing and compilation included
  (what a user waits for before the progress bar moves).

`--source DIR` runs the same jobs on the library and examples of another
checkout, e.g. one made with `git worktree add /tmp/before <commit>`; the
jobs alternate between the checkouts, round by round. Run it on a quiet
machine. The backend is `$KERAS_BACKEND` (the demo and the tuner use it
too).

Usage:
    KERAS_GRADREG_DATA=../shared/data python benchmarks/end_to_end.py
    KERAS_GRADREG_DATA=../shared/data python benchmarks/end_to_end.py \\
        --source /tmp/before --rounds 2 --jobs pgd epoch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _workers import report, run_worker

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("demo", "tune_trial", "pgd", "epoch", "first_epoch")
#: The jobs timed inside a worker process (the others time a script).
WORKER_JOBS = ("pgd", "epoch", "first_epoch")


def _timed_job(job: str, limit: int | None) -> float:
    """Runs one of `WORKER_JOBS` in this process (on the first `limit`
    images of each split, if given); returns the timed seconds."""
    import keras
    import numpy as np

    import keras_gradreg as kg

    # Read directly: the other checkout's loaders may take other arguments.
    with np.load(Path(os.environ["KERAS_GRADREG_DATA"]) / "mnist.npz") as data:
        x, x_test = (data[k].astype("float32") / 255.0 for k in ("x_train", "x_test"))
        y, y_test = data["y_train"].astype("int32"), data["y_test"].astype("int32")
    x, y, x_test, y_test = (a[:limit] for a in (x, y, x_test, y_test))
    keras.utils.set_random_seed(0)
    if job == "pgd":
        model = kg.models.mnist_maxout_mlp(input_range=(0.0, 1.0))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        kg.pgd(model, x_test[:500], y_test[:500], norm="linf", eps=0.1, steps=20)
        start = time.perf_counter()
        kg.pgd(model, x_test, y_test, norm="linf", eps=0.1, steps=20)
        return time.perf_counter() - start
    model = kg.models.mnist_maxout_mlp(
        norm="linf", sigma=0.03, form="penalty", input_range=(0.0, 1.0)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy"
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    if job == "first_epoch":
        return time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return time.perf_counter() - start


def run(job: str, source: Path, limit: int | None = None) -> float:
    """Seconds of `job` on the checkout at `source`, in a fresh process
    (`limit` caps the images of the jobs run in a worker, for smoke runs)."""
    env = {**os.environ, "PYTHONPATH": str(source), "MPLBACKEND": "Agg"}
    if job in WORKER_JOBS:
        worker_args = [job, *([] if limit is None else ["--limit", limit])]
        return run_worker(__file__, worker_args, label=job, env=env, cwd=source)
    with tempfile.TemporaryDirectory() as folder:
        if job == "demo":
            command = [sys.executable, "examples/demo_mnist.py", "--verbose", "0"]
        else:
            command = [
                sys.executable, "examples/tune_mnist.py", "--trials", "1",
                "--final-epochs", "1", "--output", folder, "--no-resume",
                "--verbose", "0",
            ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, env=env, cwd=source, check=True, capture_output=True)
        return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=None,
                        help="another checkout to time beside this one")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--output", type=Path, default=None, help="JSON results")
    parser.add_argument("--limit", type=int, default=None,
                        help="images of the worker jobs (smoke runs)")  # fmt: skip
    parser.add_argument("--worker", choices=WORKER_JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        report(_timed_job(args.worker, args.limit))
        return {}
    if not os.environ.get("KERAS_GRADREG_DATA"):
        parser.error("set $KERAS_GRADREG_DATA to the folder holding mnist.npz")
    for name in ("rounds", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1. Received: {value}")
    if args.source is not None and not (args.source / "keras_gradreg").is_dir():
        parser.error(f"--source has no keras_gradreg package. Received: {args.source}")
    sources = {"this checkout": ROOT}
    if args.source is not None:
        sources = {"--source": args.source.resolve(), **sources}
    times = {name: {job: [] for job in args.jobs} for name in sources}
    for round_ in range(args.rounds):
        for job in args.jobs:
            for name, source in sources.items():
                times[name][job].append(run(job, source, args.limit))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print(f"\nbackend {os.environ.get('KERAS_BACKEND', 'tensorflow')}\n")
    print("| job | " + " | ".join(sources) + " |")
    print("|---|" + "---:|" * len(sources))
    for job in args.jobs:
        cells = [
            f"{statistics.median(times[n][job]):.1f} s "
            f"({', '.join(f'{t:.1f}' for t in times[n][job])})"
            for n in sources
        ]
        print(f"| {job} | " + " | ".join(cells) + " |")
    if args.output:
        args.output.write_text(json.dumps(times, indent=2))
    return times


if __name__ == "__main__":
    main()
