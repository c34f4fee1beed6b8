"""Cost of one training step of each form and norm, as a ratio to plain Keras.

The network is the paper's permutation-invariant MNIST maxout MLP shape
(784 -> 240x5 maxout -> 240x5 maxout -> 10 softmax; maxout as Dense, reshape
and max) at batch 128 on synthetic data, or with `--network small_cnn` the
members study's CNN (Wong et al.'s MNIST CNN, `reproductions/compare_members.py`).
Every configuration is timed through `model.fit` in the same process as a
plain `keras.Model` of the same network:
all models are built and traced first (untimed), then timed in interleaved
rounds of one epoch each, and the median epoch gives examples/s. TF and JAX run with `jit_compile=True`
(XLA); torch runs eagerly (torch.compile cannot differentiate twice).
TensorFlow reads a cached, pre-batched `tf.data` pipeline (see below); JAX
and torch read the NumPy arrays.

Usage:
    python benchmarks/step_cost.py                      # all three backends
    python benchmarks/step_cost.py --backends jax --rounds 3 --steps 50
    python benchmarks/step_cost.py --only multistep "perturb linf alpha=0"
    python benchmarks/step_cost.py --backends torch --torch-compile   # first order
    python benchmarks/step_cost.py --network small_cnn --batch-size 100 --backends jax \
        --only "perturb linf alpha=0" fgsm_rs n_fgsm gradalign "k=10" "penalty linf" "penalty l2"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _workers import report, run_worker

#: The forms' `clean_metrics=False`: no forward pass at the clean inputs.
NO_CLEAN = {"form_arguments": {"clean_metrics": False}}

CONFIGS = [
    ("plain", None),
    ("sigma=0 (plain + dL/dx for grad_norm)", {"sigma": 0.0}),
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
    *[
        (f"multistep {norm} k={k}", {"form": "multistep", "norm": norm, "steps": k})
        for norm in ("linf", "l2")
        for k in (3, 7)
    ],
    ("multistep linf k=10", {"form": "multistep", "norm": "linf", "steps": 10}),
    ("fgsm_rs linf", {"form": "fgsm_rs", "norm": "linf"}),
    ("n_fgsm linf", {"form": "n_fgsm", "norm": "linf"}),
    *[
        (f"{form} linf, no clean pass", {"form": form, "norm": "linf", **NO_CLEAN})
        for form in ("fgsm_rs", "n_fgsm")
    ],
    (
        "multistep linf k=10, no clean pass",
        {"form": "multistep", "norm": "linf", "steps": 10, **NO_CLEAN},
    ),
    ("squared_penalty l2", {"form": "squared_penalty", "norm": "l2"}),
    ("gradalign linf", {"form": "gradalign", "norm": "linf"}),
    ("curvature linf", {"form": "curvature", "norm": "linf"}),
    ("jacobian l2 (1 projection)", {"form": "jacobian", "norm": "l2"}),
    ("trades linf k=7", {"form": "trades", "norm": "linf", "steps": 7}),
    ("trades linf k=10", {"form": "trades", "norm": "linf", "steps": 10}),
    ("llr linf k=3", {"form": "llr", "norm": "linf", "steps": 3}),
    ("mart linf k=7", {"form": "mart", "norm": "linf", "steps": 7}),
]


#: Network -> the shape of one input.
NETWORKS = {"maxout_mlp": (784,), "small_cnn": (28, 28, 1)}


def build(regularizer, network="maxout_mlp"):
    import keras
    from keras import layers, ops

    import keras_gradreg as kg

    inputs = keras.Input(NETWORKS[network])
    h = inputs
    if network == "small_cnn":  # conv 16 4x4/2, conv 32 4x4/2, dense 100
        for filters in (16, 32):
            h = layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(
                h
            )
        h = layers.Dense(100, activation="relu")(layers.Flatten()(h))
    else:
        for _ in range(2):
            h = layers.Dense(240 * 5)(h)
            h = layers.Reshape((240, 5))(h)
            h = layers.Lambda(lambda t: ops.max(t, axis=-1))(h)
    outputs = layers.Dense(10, activation="softmax")(h)
    if regularizer is None:
        return keras.Model(inputs, outputs)
    regularizer = {"sigma": 0.1, **regularizer}
    form_arguments = regularizer.pop("form_arguments", None)
    if form_arguments:
        form = kg.forms.get(regularizer["form"]).replace(**form_arguments)
        regularizer["form"] = form
    return kg.GradRegModel(inputs, outputs, **regularizer)


def fit_data(x, y, batch: int) -> dict:
    """`model.fit` keyword arguments for timing on `x`, `y` in batches.

    From NumPy arrays, Keras's tf.data pipeline competes with XLA for the
    cores and TF epoch times swing 2x or settle on multiples of a stall;
    on TensorFlow this returns a cached, pre-batched dataset with a
    one-thread pool instead, which makes TF timings repeatable.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return {"x": x, "y": y, "batch_size": batch}
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return {
        "x": dataset.batch(batch, drop_remainder=True).cache().with_options(options)
    }


def selected(only) -> list:
    """The configurations whose name contains one of `only` (all when
    empty), always with "plain", the reference of every ratio."""
    return [
        (name, regularizer)
        for name, regularizer in CONFIGS
        if name == "plain" or not only or any(word in name for word in only)
    ]


def _second_order(regularizer) -> bool:
    import keras_gradreg as kg

    if not regularizer:
        return False
    regularizer = {k: v for k, v in regularizer.items() if k != "form_arguments"}
    return kg.GradientRegularizer(**regularizer).form.second_order


def run_backend(
    rounds: int, steps: int, batch: int, only=(), torch_compile: bool = False,
    network: str = "maxout_mlp",
) -> dict:  # fmt: skip
    import keras
    import numpy as np

    backend = keras.backend.backend()
    jit = backend != "torch" or torch_compile
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, *NETWORKS[network]), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    data = fit_data(x, y, batch)
    models = {}
    for name, regularizer in selected(only):
        if jit and backend == "torch" and _second_order(regularizer):
            continue  # torch.compile cannot differentiate twice
        keras.utils.set_random_seed(0)
        model = build(regularizer, network)
        model.compile(
            optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=jit
        )
        model.fit(**data, epochs=1, verbose=0)  # trace / compile: not timed
        models[name] = model
    # Interleaved rounds, one epoch per configuration per round: slow drift
    # of the machine then hits every configuration alike.
    epoch_times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(**data, epochs=1, verbose=0)
            epoch_times[name].append(time.perf_counter() - start)
    results = {
        name: steps * batch / statistics.median(times)
        for name, times in epoch_times.items()
    }
    for name, speed in results.items():
        print(f"  {backend:<10} {name:<40} {speed:>9.0f} ex/s", file=sys.stderr)
    return {
        "backend": backend,
        "jit_compile": jit,
        "keras": keras.__version__,
        "network": network,
        "batch_size": batch,
        "examples_per_s": results,
    }


def _compiler(run: dict) -> str:
    if not run["jit_compile"]:
        return "eager"
    return "torch.compile" if run["backend"] == "torch" else "XLA"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument(
        "--rounds", type=int, default=7, help="timed epochs per configuration"
    )
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--network", choices=list(NETWORKS), default="maxout_mlp")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--only", nargs="+", default=[],
        help="time only configurations whose name contains one of these words",
    )  # fmt: skip
    parser.add_argument(
        "--torch-compile", action="store_true",
        help="torch: time under torch.compile (first-order forms; not the penalty)",
    )  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.batch_size) < 1:
        parser.error(
            "--rounds, --steps and --batch-size must be >= 1. Received: "
            f"{args.rounds}, {args.steps}, {args.batch_size}"
        )

    if args.worker:
        result = run_backend(
            args.rounds, args.steps, args.batch_size, args.only, args.torch_compile,
            args.network,
        )  # fmt: skip
        report(result)
        return

    runs = []
    for backend in args.backends:
        worker_args = [
            "--rounds", args.rounds, "--steps", args.steps,
            "--batch-size", args.batch_size, "--network", args.network,
            *(["--only", *args.only] if args.only else []),
            *(["--torch-compile"] if args.torch_compile else []),
        ]  # fmt: skip
        print(f"timing {backend} ...", file=sys.stderr)
        runs.append(
            run_worker(
                __file__, worker_args, label=backend, env={"KERAS_BACKEND": backend}
            )
        )
        if args.json:  # each finished backend is kept, whatever comes after
            with open(args.json, "w") as f:
                json.dump(runs, f, indent=2)

    header = "| configuration | " + " | ".join(
        f"{r['backend']} ({_compiler(r)}) ex/s | ratio" for r in runs
    )
    print(header + " |")
    print("|---|" + "---:|---:|" * len(runs))
    for name, _ in selected(args.only):
        cells = []
        for r in runs:
            if name not in r["examples_per_s"]:
                cells.append("— | —")
                continue
            speed = r["examples_per_s"][name]
            ratio = r["examples_per_s"]["plain"] / speed
            cells.append(f"{speed:,.0f} | {ratio:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
