"""Several trainings on one machine: unpinned against one core each.

Long runs (a reproduction's seeds, ablations, a tuner's trials) are often
started side by side on the same machine. Each process's XLA runtime sizes
its thread pool to every core it may use; two or more such processes on
the same cores then compete for them. This script starts `k` copies of the
same training at once, each either free to use every core (`unpinned`) or
restricted to one core with `os.sched_setaffinity` (`pinned`, worker `i`
on core `i mod cores`, what `taskset -c i` does), and reports each
worker's median epoch time and the machine's throughput (steps per second
summed over the workers) against one unpinned worker alone.

The training is the paper's maxout MLP (`kg.models.mnist_maxout_mlp`,
dropout and max-norm) in `GradRegModel`, SGD, batch 100, on synthetic
data; `--sigma 0` trains it plain, a positive sigma with the l2 penalty.

Usage:
    KERAS_BACKEND=jax python benchmarks/concurrent_runs.py
    KERAS_BACKEND=jax python benchmarks/concurrent_runs.py --workers 1 2 4 --sigma 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(core, steps: int, epochs: int, sigma: float) -> dict:
    """Times `epochs` epochs of `steps` steps after one untimed epoch."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    import keras
    import numpy as np

    import keras_gradreg as kg

    batch = 100
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    keras.utils.set_random_seed(0)
    model = kg.models.mnist_maxout_mlp(sigma=sigma, norm="l2", input_range=(0.0, 1.0))
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.5),
        loss="sparse_categorical_crossentropy",
        jit_compile=keras.backend.backend() != "torch",
    )
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile: untimed
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return {"core": core, "epoch_s": statistics.median(times)}


def run_together(k: int, pinned: bool, args) -> list:
    """Starts `k` workers at once and returns each one's result."""
    cores = sorted(os.sched_getaffinity(0))
    processes = []
    for i in range(k):
        command = [
            sys.executable, __file__, "--worker",
            "--steps", str(args.steps), "--epochs", str(args.epochs),
            "--sigma", str(args.sigma),
            *(["--core", str(cores[i % len(cores)])] if pinned else []),
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    results = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode:
            sys.exit(f"worker failed:\n{err.decode()[-4000:]}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs")
    parser.add_argument("--sigma", type=float, default=0.0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.steps, args.epochs, *args.workers) < 1:
        parser.error(
            "--steps, --epochs and --workers must be >= 1. Received: "
            f"{args.steps}, {args.epochs}, {args.workers}"
        )
    if args.sigma < 0:
        parser.error(f"--sigma must be >= 0. Received: {args.sigma}")
    if args.worker:
        print(json.dumps(worker(args.core, args.steps, args.epochs, args.sigma)))
        return

    rows = []
    alone = None
    for k in args.workers:
        for pinned in (False, True) if k > 1 else (False,):
            label = f"{k} {'pinned' if pinned else 'unpinned'}"
            print(f"timing {label} ...", file=sys.stderr)
            results = run_together(k, pinned, args)
            epoch_s = [r["epoch_s"] for r in results]
            throughput = sum(args.steps / s for s in epoch_s)
            alone = alone or throughput
            rows.append(
                {
                    "workers": k,
                    "pinned": pinned,
                    "epoch_s": epoch_s,
                    "steps_per_s": throughput,
                    "vs_one_alone": throughput / alone,
                }
            )
    cores = len(os.sched_getaffinity(0))
    print(f"\n{cores} cores, {args.steps} steps per epoch, sigma {args.sigma:g}\n")
    print(
        "| workers | affinity | epoch time per worker (s) | steps/s, all workers | × one alone |"
    )
    print("|---:|---|---|---:|---:|")
    for row in rows:
        times = " / ".join(f"{s:.2f}" for s in row["epoch_s"])
        affinity = "one core each" if row["pinned"] else "every core"
        print(
            f"| {row['workers']} | {affinity} | {times} | "
            f"{row['steps_per_s']:.1f} | {row['vs_one_alone']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            record = {
                "cores": cores,
                "backend": os.environ.get("KERAS_BACKEND"),
                "xla_flags": os.environ.get("XLA_FLAGS"),
                "args": {
                    k: v for k, v in vars(args).items() if k not in ("worker", "core")
                },
                "rows": rows,
            }
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
