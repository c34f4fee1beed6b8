"""Where a compiled training step's time goes, from the compiled program
(TensorFlow and JAX with XLA).

For each configuration of `step_cost.py` (the maxout MLP at batch 128), in a
process of its own:

1. XLA dumps the optimized HLO of the train step (`--xla_dump_to`); every
   `dot` in it is counted with its FLOPs (2 * output size * contracted
   size), so the matrix products the step really executes can be compared
   with the pass count the form needs (docs/performance.md's unit model);
2. the backend's profiler (`jax.profiler`, `tf.profiler`) traces `--steps`
   steps, and the CPU time of each XLA thunk is summed by class: matrix
   products (a `dot`, or a fusion whose computation holds one) and
   everything else (elementwise, reductions, copies, the optimizer
   update); the wall time per step of the traced epoch is recorded beside
   them (it also holds what runs outside the compiled program).

Usage:
    python benchmarks/pass_count.py --backend jax
    python benchmarks/pass_count.py --backend tensorflow --only perturb penalty
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
from pathlib import Path

from _workers import report, run_worker
from step_cost import build, selected

DEFINITION = re.compile(r"%([\w.\-]+) = \w+\[([\d,]*)\]")
DOT = re.compile(
    r"%[\w.\-]+ = \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), [^)]*\), "
    r"lhs_contracting_dims=\{([\d,]*)\}"
)
COMPUTATION = re.compile(r"^%([\w.\-]+) .*\{$")
CALL = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*calls=%([\w.\-]+)")


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def hlo_matmuls(hlo: str):
    """The dots of an optimized HLO module: their count, total FLOPs, and
    the names of the instructions (dots, or fusions calling a computation
    with a dot) that run them."""
    shapes = {name: _dims(dims) for name, dims in DEFINITION.findall(hlo)}
    flops = 0
    count = 0
    with_dot, computation, calls = set(), None, {}
    for line in hlo.splitlines():  # one step's module
        header = COMPUTATION.match(line)
        if header:
            computation = header.group(1)
        call = CALL.match(line)
        if call:
            calls[call.group(1)] = call.group(2)
        dot = DOT.search(line)
        if dot:
            out, lhs, contracting = dot.groups()
            size = 1
            for d in _dims(out):
                size *= d
            lhs_shape = shapes[lhs]
            contracted = 1
            for axis in _dims(contracting):
                contracted *= lhs_shape[axis]
            flops += 2 * size * contracted
            count += 1
            with_dot.add(computation)
            name = line.split("=")[0].strip().removeprefix("ROOT ").lstrip("%")
            with_dot.add(name)
    matmul_ops = {n for n, c in calls.items() if c in with_dot} | with_dot
    return count, flops, matmul_ops


MODULES = {"jax": "jit_train_step", "tensorflow": "one_step_on_data", "torch": ""}


def _profiled(fit, backend: str) -> tuple[str, float]:
    """Runs `fit()` under the backend's profiler; returns the trace file and
    the wall seconds."""
    import time

    trace = tempfile.mkdtemp()
    if backend == "jax":
        import jax

        start, stop = (lambda: jax.profiler.start_trace(trace)), jax.profiler.stop_trace
    else:
        import tensorflow as tf

        start = lambda: tf.profiler.experimental.start(trace)  # noqa: E731
        stop = tf.profiler.experimental.stop
    start()
    began = time.perf_counter()
    fit()
    seconds = time.perf_counter() - began
    stop()
    return sorted(glob.glob(f"{trace}/**/*.xplane.pb", recursive=True))[-1], seconds


def _xla(model, data, steps, dump, backend) -> dict:
    import jax

    model.fit(**data)  # compile
    profile, wall = _profiled(lambda: model.fit(**data), backend)
    (module,) = glob.glob(f"{dump}/*{MODULES[backend]}*after_optimizations.txt")
    count, flops, matmul_ops = hlo_matmuls(Path(module).read_text())
    seconds = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(profile).planes:
        for line in plane.lines:
            if "Eigen" not in line.name and not line.name.startswith("tf_XLA"):
                continue  # XLA's worker threads run the thunks
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "H2D", "D2H")):
                    continue  # the executor's own spans and its waits
                kind = "matmul" if event.name in matmul_ops else "other"
                seconds[kind] += event.duration_ns / 1e9
    return {"dots": count, "flops": flops, "seconds": seconds, "wall": wall}


#: The aten operators that do a matrix product's arithmetic, and all that
#: count as matrix products (with the wrappers around them).
TORCH_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")
TORCH_MATMULS = (*TORCH_PRODUCTS, "aten::matmul", "aten::linear")


def _torch(model, data, steps) -> dict:
    import time

    import torch

    model.fit(**data)  # warm up
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, with_flops=True) as prof:
        began = time.perf_counter()
        model.fit(**data)
        wall = time.perf_counter() - began
    seconds = collections.Counter()
    count = flops = 0
    for event in prof.key_averages():
        if event.key in TORCH_PRODUCTS:
            count += event.count
            flops += event.flops
        kind = "matmul" if event.key in TORCH_MATMULS else "other"
        seconds[kind] += event.self_cpu_time_total / 1e6
    per_step = {"dots": count / steps, "flops": flops / steps}
    return {**per_step, "seconds": seconds, "wall": wall}


def worker(name: str, steps: int, dump: str) -> dict:
    import keras
    import numpy as np

    backend = keras.backend.backend()
    regularizer = dict(selected([name]))[name]
    keras.utils.set_random_seed(0)
    model = build(regularizer)
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        jit_compile=backend != "torch",
    )
    rng = np.random.default_rng(0)
    x = rng.random((steps * 128, 784), dtype=np.float32)
    y = rng.integers(0, 10, steps * 128)
    data = {"x": x, "y": y, "batch_size": 128, "epochs": 1, "verbose": 0}
    if backend == "tensorflow":
        from step_cost import fit_data

        data = {**fit_data(x, y, 128), "epochs": 1, "verbose": 0}
    if backend == "torch":
        r = _torch(model, data, steps)
    else:
        r = _xla(model, data, steps, dump, backend)
    return {
        "dots": r["dots"],
        "gflop_per_step": r["flops"] / 1e9,  # per step from both
        "matmul_ms_per_step": 1e3 * r["seconds"]["matmul"] / steps,
        "other_ms_per_step": 1e3 * r["seconds"]["other"] / steps,
        "wall_ms_per_step": 1e3 * r["wall"] / steps,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=tuple(MODULES), default="jax")
    parser.add_argument("--only", nargs="*", default=())
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1. Received: {args.steps}")
    if args.worker:
        report(worker(args.worker, args.steps, args.dump))
        return None
    results = {}
    for name, _ in selected(args.only):
        with tempfile.TemporaryDirectory() as dump:
            env = {
                "KERAS_BACKEND": args.backend,
                "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text "
                f"--xla_dump_hlo_module_re=.*{MODULES[args.backend]}.*",
            }
            results[name] = run_worker(
                __file__, [name, "--dump", dump, "--steps", args.steps],
                label=name, env=env,
            )  # fmt: skip
        print(f"  {name}: {results[name]}", file=sys.stderr)
    plain = results["plain"]
    print(
        f"{args.backend}: | configuration | dots | GFLOP/step (x plain) | "
        "matmul ms/step (x plain) | other ms/step (x plain) | wall ms/step (x plain) |"
    )
    print("|---|---:|---:|---:|---:|---:|")

    def cell(r, key, digits=2):
        return f"{r[key]:.{digits}f} ({r[key] / plain[key]:.2f}x)"

    for name, r in results.items():
        print(
            f"| {name} | {r['dots']} | {cell(r, 'gflop_per_step', 3)} | "
            f"{cell(r, 'matmul_ms_per_step')} | {cell(r, 'other_ms_per_step')} | "
            f"{cell(r, 'wall_ms_per_step')} |"
        )
    return results


if __name__ == "__main__":
    main()
