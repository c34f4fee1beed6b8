"""Where TensorFlow's time goes: keras_gradreg against NSL, op by op.

Runs the adversarial-training job of `vs_legacy_adversarial.py` (the
maxout MLP with dropout, linf or l2 perturbations, loss `L + L_adv`, batch
128, the same cached `tf.data` pipeline) for keras_gradreg on Keras 3 and
for Neural Structured Learning on legacy tf.keras, each in its own process
and without XLA (`jit_compile=False`, TensorFlow's graph executor). After
an untimed epoch, each times `--epochs` epochs of `--steps` steps (median
wall time per step), then traces one more under `tf.profiler` and sums the
CPU time of every op kernel on TensorFlow's compute threads by op type.
The table shows, per step, each op type's time and count, the kernels'
total, and how busy they kept the compute threads (the kernels' total over
threads × the profiled wall time). With `--xla` both compile the step
(`jit_compile=True`) and the rows are the compiled program's thunks by
kind, read against the optimized HLO that XLA dumps: matrix products, the
random draws (the dropout masks' computations) and the rest, with the
draws' time that ran while a product ran on the other thread.

Setup: `make bench-legacy-setup` (NSL into `.bench-legacy/`).

Usage (pause other work on the machine first):

    KERAS_GRADREG_DATA=../shared/data python benchmarks/tf_op_profile.py --norm linf
    KERAS_GRADREG_DATA=../shared/data python benchmarks/tf_op_profile.py --plain
    KERAS_GRADREG_DATA=../shared/data python benchmarks/tf_op_profile.py --xla
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import vs_legacy_adversarial as legacy
from _workers import report, run_worker

#: Profiler events on the compute threads that are not kernels.
BOOKKEEPING = {"Process", "StartRegion", "StopRegion", "Record", "MemoryAllocation",
               "MemoryDeallocation", "ExecutorDoneCallback", "Start"}  # fmt: skip


def worker(impl: str, norm: str, steps: int, epochs: int, dump: str | None) -> dict:
    import numpy as np

    spec = {"impl": impl, "jit": dump is not None, "norm": norm,
            "sigma": legacy.NORMS[norm], "dropout": legacy.DROPOUT, "seed": 0}  # fmt: skip
    if impl in ("nsl", "legacy-plain"):
        tf, model, _ = legacy._nsl_model(spec)
    else:
        import keras

        keras.utils.set_random_seed(0)
        tf, model, _ = legacy._ours_model(spec)
    with np.load(os.path.join(os.environ["KERAS_GRADREG_DATA"], "mnist.npz")) as d:
        x = d["x_train"][: 128 * steps].reshape(-1, 784) / 255.0
        y = d["y_train"][: 128 * steps].astype("int32")
    data = legacy._pipeline(tf, x.astype("float32"), y, 128, as_dict=impl == "nsl")

    def epoch():
        began = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - began

    epoch()  # tracing
    wall = statistics.median(epoch() for _ in range(epochs)) / steps
    trace = tempfile.mkdtemp()
    tf.profiler.experimental.start(trace)
    profiled = epoch() / steps
    tf.profiler.experimental.stop()
    (path,) = glob.glob(f"{trace}/**/*.xplane.pb", recursive=True)
    times = _kernel_times(path) if dump is None else _thunk_times(path, dump)
    seconds, counts, threads, concurrent = times
    return {"wall": wall, "profiled_wall": profiled, "threads": threads,
            "seconds": {k: v / steps for k, v in seconds.items()},
            "counts": {k: v / steps for k, v in counts.items()},
            "draws_concurrent": concurrent / steps}  # fmt: skip


def _events(path: str, thread):
    """(thread, name, start, end) of the profile's events, in seconds, on
    the threads `thread(name)` accepts."""
    import jax  # its reader of TensorFlow's profile files

    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            if thread(line.name):
                for e in line.events:
                    start = e.start_ns / 1e9
                    yield line.name, e.name, start, start + e.duration_ns / 1e9


def _kernel_times(path: str):
    """Without XLA: each op kernel's CPU time on TensorFlow's compute
    threads, by op type."""
    seconds, counts, threads = collections.Counter(), collections.Counter(), set()
    for thread, name, start, end in _events(path, lambda t: t.startswith("tf_Compute")):
        threads.add(thread)
        op = name.split(":")[-1]
        if op not in BOOKKEEPING:
            seconds[op] += end - start
            counts[op] += 1
    return seconds, counts, len(threads), 0.0


def _thunk_times(path: str, dump: str):
    """With XLA: the compiled step's thunks by kind (matrix products, the
    random draws' computations, the rest), read against the optimized HLO
    that XLA dumped, and the draws' time concurrent with a product on
    another thread."""
    import pass_count

    hlo = Path(max(glob.glob(f"{dump}/*after_optimizations.txt"), key=os.path.getsize))
    text = hlo.read_text()
    products = pass_count.hlo_matmuls(text)[2]
    draws, calls, computation = set(), set(), None
    for line in text.splitlines():
        header = pass_count.COMPUTATION.match(line)
        computation = header.group(1) if header else computation
        name = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if name and computation and computation.startswith("rng"):
            draws.add(name.group(1))
        if name and "to_apply=%rng" in line:
            calls.add(name.group(1))  # the wrapper around a draw's thunks
    seconds, counts, threads, spans = (
        collections.Counter(),
        collections.Counter(),
        set(),
        [],
    )
    xla = lambda t: "Eigen" in t or t.startswith("tf_XLA")  # noqa: E731
    for thread, name, start, end in _events(path, xla):
        if name.startswith(("ThunkExecutor", "H2D", "D2H")) or name in calls:
            continue
        threads.add(thread)
        kind = ("matrix products" if name in products
                else "random draws" if name in draws else "other thunks")  # fmt: skip
        seconds[kind] += end - start
        counts[kind] += 1
        spans.append((thread, kind, start, end))
    concurrent = sum(
        max(0.0, min(end, e2) - max(start, s2))
        for thread, kind, start, end in spans if kind == "random draws"
        for t2, k2, s2, e2 in spans if k2 == "matrix products" and t2 != thread
    )  # fmt: skip
    return seconds, counts, len(threads), concurrent


def table(results: dict) -> str:
    names = list(results)
    ops = sorted(
        {op for r in results.values() for op in r["seconds"]},
        key=lambda op: -max(r["seconds"].get(op, 0.0) for r in results.values()),
    )
    lines = [
        "| op (ms per step, count) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for op in ops:
        cells = [
            f"{1e3 * r['seconds'][op]:.2f} ({r['counts'][op]:.0f})"
            if op in r["seconds"] else "—"
            for r in results.values()
        ]  # fmt: skip
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    total = {n: sum(r["seconds"].values()) for n, r in results.items()}
    lines.append(
        "| **all kernels** | " + " | ".join(f"**{1e3 * t:.2f}**" for t in total.values())
        + " |"
    )  # fmt: skip
    lines.append(
        "| wall per step (median) | "
        + " | ".join(f"{1e3 * r['wall']:.2f}" for r in results.values()) + " |"
    )  # fmt: skip
    lines.append(
        "| compute threads busy | "
        + " | ".join(
            f"{total[n] / (r['threads'] * r['profiled_wall']):.0%} of {r['threads']}"
            for n, r in results.items()
        ) + " |"
    )  # fmt: skip
    if any(r["draws_concurrent"] for r in results.values()) or "random draws" in ops:
        lines.append(
            "| random draws concurrent with a product on another thread | "
            + " | ".join(f"{1e3 * r['draws_concurrent']:.2f}" for r in results.values())
            + " |"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--norm", choices=list(legacy.NORMS), default="linf")
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    parser.add_argument(
        "--plain", action="store_true",
        help="also profile plain training of the same network in both frameworks",
    )  # fmt: skip
    parser.add_argument(
        "--xla", action="store_true",
        help="compile with XLA (jit_compile=True) and report its thunks by kind",
    )  # fmt: skip
    parser.add_argument("--output", help="also write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {getattr(args, name)}")
    if args.worker:
        report(worker(args.worker, args.norm, args.steps, args.epochs, args.dump))
        return {}
    if not legacy.LEGACY.exists():
        parser.error(
            f"NSL is not installed in {legacy.LEGACY}: run make bench-legacy-setup"
        )
    results = {}
    runs = [("keras_gradreg (Keras 3)", "ours"), ("NSL (legacy tf.keras)", "nsl")]
    if args.plain:
        runs += [
            ("plain Keras 3", "keras-plain"),
            ("plain legacy tf.keras", "legacy-plain"),
        ]
    for name, impl in runs:
        legacy_keras = impl in ("nsl", "legacy-plain")
        env = {"KERAS_BACKEND": "tensorflow",
               "TF_USE_LEGACY_KERAS": "1" if legacy_keras else "0"}  # fmt: skip
        worker_args = [impl, "--norm", args.norm, "--steps", args.steps,
                       "--epochs", args.epochs]  # fmt: skip
        with tempfile.TemporaryDirectory() as dump:
            if args.xla:
                env["XLA_FLAGS"] = f"--xla_dump_to={dump} --xla_dump_hlo_as_text"
                worker_args += ["--dump", dump]
            results[name] = run_worker(__file__, worker_args, label=name, env=env)
    mode = "with XLA" if args.xla else "without XLA"
    print(f"TensorFlow {mode}, {args.norm} (sigma {legacy.NORMS[args.norm]}):\n")
    print(table(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
