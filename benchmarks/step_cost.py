"""Cost of one training step of each form and norm, as a ratio to plain Keras.

The network is the paper's permutation-invariant MNIST maxout MLP shape
(784 -> 240x5 maxout -> 240x5 maxout -> 10 softmax; maxout as Dense, reshape
and max) at batch 128 on synthetic data. Every configuration is timed through
`model.fit` in the same process as a plain `keras.Model` of the same network:
the first epoch (tracing/compilation) is dropped and the median of the other
epochs' examples/s is reported. TF and JAX run with `jit_compile=True`
(XLA); torch runs eagerly (torch.compile cannot differentiate twice).

Usage:
    python benchmarks/step_cost.py                      # all three backends
    python benchmarks/step_cost.py --backends jax --epochs 4 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = [
    ("plain", None),
    *[
        (f"penalty {norm}", {"form": "penalty", "norm": norm})
        for norm in ("linf", "l2", "l1", 3.0)
    ],
    *[
        (f"perturb {norm} alpha=0", {"form": "perturb", "norm": norm})
        for norm in ("linf", "l2", "l1", 3.0)
    ],
    ("perturb linf alpha=0.5", {"form": "perturb", "norm": "linf", "alpha": 0.5}),
    *[
        (f"finite_difference {norm}", {"form": "finite_difference", "norm": norm})
        for norm in ("linf", "l2", "l1", 3.0)
    ],
]


def build(regularizer):
    import keras
    from keras import layers, ops

    import keras_gradreg as kg

    inputs = keras.Input((784,))
    h = inputs
    for _ in range(2):
        h = layers.Dense(240 * 5)(h)
        h = layers.Reshape((240, 5))(h)
        h = layers.Lambda(lambda t: ops.max(t, axis=-1))(h)
    outputs = layers.Dense(10, activation="softmax")(h)
    if regularizer is None:
        return keras.Model(inputs, outputs)
    return kg.GradRegModel(inputs, outputs, sigma=0.1, **regularizer)


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        self.callback = _Timer()


def run_backend(epochs: int, steps: int, batch: int) -> dict:
    import keras
    import numpy as np

    backend = keras.backend.backend()
    jit = backend != "torch"
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    results = {}
    for name, regularizer in CONFIGS:
        keras.utils.set_random_seed(0)
        model = build(regularizer)
        model.compile(
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            jit_compile=jit,
        )
        timer = EpochTimer().callback
        model.fit(
            x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer]
        )
        per_epoch = sorted(timer.times[1:])
        median = per_epoch[len(per_epoch) // 2]
        results[name] = steps * batch / median
        print(f"  {backend:<10} {name:<26} {results[name]:>9.0f} ex/s", file=sys.stderr)
    return {
        "backend": backend,
        "jit_compile": jit,
        "keras": keras.__version__,
        "examples_per_s": results,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--epochs", type=int, default=5, help="including 1 warm-up epoch")
    parser.add_argument("--steps", type=int, default=80, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (one is a warm-up). Received: {args.epochs}")

    if args.worker:
        print(json.dumps(run_backend(args.epochs, args.steps, args.batch_size)))
        return

    runs = []
    for backend in args.backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [
            sys.executable, __file__, "--worker",
            "--epochs", str(args.epochs), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size),
        ]  # fmt: skip
        print(f"timing {backend} ...", file=sys.stderr)
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        sys.stderr.write(out.stderr[-4000:] if out.returncode else "")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

    header = "| configuration | " + " | ".join(
        f"{r['backend']}{' (XLA)' if r['jit_compile'] else ' (eager)'} ex/s | ratio"
        for r in runs
    )
    print(header + " |")
    print("|---|" + "---:|---:|" * len(runs))
    for name, _ in CONFIGS:
        cells = []
        for r in runs:
            speed = r["examples_per_s"][name]
            ratio = r["examples_per_s"]["plain"] / speed
            cells.append(f"{speed:,.0f} | {ratio:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
