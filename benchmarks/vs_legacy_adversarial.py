"""keras_gradreg against Neural Structured Learning: the same adversarial
training job, timed side by side.

The established TensorFlow implementation of FGSM-style adversarial training
is Neural Structured Learning's `AdversarialRegularization` on legacy
tf.keras (loss `L + multiplier * L_adv`, the perturbation `adv_step_size`
along the input gradient's linf or l2 steepest-ascent direction). The same
job in keras_gradreg is `GradRegModel(norm, sigma, form="perturb",
alpha=0.5)`, whose objective `0.5 L + 0.5 L_adv` has the same gradient up
to the factor 0.5, which Adam does not see.

Both train the paper's permutation-invariant maxout MLP (784 -> dropout 0.2
-> 240x5 maxout -> dropout 0.5 -> 240x5 maxout -> dropout 0.5 -> softmax,
max column norm 1.9365, Glorot init) on MNIST, batch 128, Adam 1e-3,
perturbations clipped to [0, 1], each in its own process fed the same
cached, pre-batched `tf.data` pipeline (one private thread, no autotune, no
shuffle). Each process trains one epoch per round, the processes take
turns, and the first epoch (tracing and compilation) is not timed. The
table gives each pairing's per-round throughput ratio (ours / theirs):
median, min and max. After the rounds every process reports its clean
training accuracy and FGSM test accuracy at the training radius, which
must agree if both train the same thing. keras_gradreg's perturbed pass
draws the clean pass's dropout masks (`share_noise=True`, its default),
NSL's draws fresh ones; the "fresh noise" configurations
(`share_noise=False`) train exactly what NSL trains. `--with-plain` also times plain
training of the same network in legacy tf.keras and Keras 3, for each
adversarial step's cost over its own framework's plain step.

Setup (NSL does not import under TensorFlow 2.21 as is: it needs tf-keras,
`TF_USE_LEGACY_KERAS=1` and an empty `tensorflow.estimator` module; the
packages go to a folder of their own so the project's environment stays
clean):

    make bench-legacy-setup            # pip install --target .bench-legacy

Usage (pause other work on the machine first):

    KERAS_GRADREG_DATA=../shared/data python benchmarks/vs_legacy_adversarial.py
    python benchmarks/vs_legacy_adversarial.py --rounds 2 --train-limit 6400  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / ".bench-legacy"
MAX_NORM = 1.9365
#: Dropout rates of the input and of the hidden layers (the paper's).
DROPOUT = (0.2, 0.5)
#: (name, implementation, backend, jit_compile)
JAX_CPU_FLAGS = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
CONFIGS = [
    ("NSL, legacy tf.keras", "nsl", "tensorflow", False),
    ("NSL, legacy tf.keras, XLA", "nsl", "tensorflow", True),
    ("keras_gradreg, TF", "ours", "tensorflow", False),
    ("keras_gradreg, TF, XLA", "ours", "tensorflow", True),
    ("keras_gradreg, JAX", "ours", "jax", True),
    # XLA's CPU dot fusions with their epilogues are slow on this network
    # (docs/performance.md); this flag keeps YNNPACK for the products alone.
    ("keras_gradreg, JAX, individual_dot", "ours", "jax", True, JAX_CPU_FLAGS),
    # NSL's objective: fresh dropout masks in the perturbed pass.
    ("keras_gradreg, TF, XLA, fresh noise", "ours-fresh", "tensorflow", True),
    (
        "keras_gradreg, JAX, individual_dot, fresh noise",
        "ours-fresh",
        "jax",
        True,
        JAX_CPU_FLAGS,
    ),
]
#: Plain training of the same network, for each adversarial step's cost
#: relative to its own framework's plain step (`--with-plain`).
PLAIN = [
    ("plain legacy tf.keras, XLA", "legacy-plain", "tensorflow", True),
    ("plain Keras 3, TF, XLA", "keras-plain", "tensorflow", True),
    ("plain Keras 3, JAX", "keras-plain", "jax", True),
]
OWN_PLAIN = {
    "NSL, legacy tf.keras, XLA": "plain legacy tf.keras, XLA",
    "keras_gradreg, TF, XLA": "plain Keras 3, TF, XLA",
    "keras_gradreg, JAX": "plain Keras 3, JAX",
}
#: (ours, theirs): the pairings the table reports.
PAIRS = [
    ("keras_gradreg, TF", "NSL, legacy tf.keras"),
    ("keras_gradreg, TF, XLA", "NSL, legacy tf.keras, XLA"),
    ("keras_gradreg, JAX", "NSL, legacy tf.keras"),
    ("keras_gradreg, JAX", "NSL, legacy tf.keras, XLA"),
    ("keras_gradreg, JAX, individual_dot", "NSL, legacy tf.keras"),
    ("keras_gradreg, JAX, individual_dot", "NSL, legacy tf.keras, XLA"),
    ("keras_gradreg, TF, XLA, fresh noise", "NSL, legacy tf.keras, XLA"),
    ("keras_gradreg, JAX, individual_dot, fresh noise", "NSL, legacy tf.keras, XLA"),
]
NORMS = {"linf": 0.1, "l2": 1.0}


# --- worker side: one configuration in its own process ----------------------


def _pipeline(tf, x, y, batch, as_dict):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    data = tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": y} if as_dict else (x, y)
    )
    return data.batch(batch, drop_remainder=True).cache().with_options(options)


def _nsl_model(spec):
    sys.path.insert(0, str(LEGACY))
    import tensorflow as tf

    # NSL imports tensorflow.estimator, which TF 2.16+ no longer ships.
    sys.modules.setdefault("tensorflow.estimator", types.ModuleType("estimator"))
    import neural_structured_learning as nsl

    keras = tf.keras
    constraint = lambda: keras.constraints.MaxNorm(MAX_NORM, axis=0)  # noqa: E731
    input_rate, hidden_rate = spec["dropout"]
    inputs = keras.Input((784,), name="image")
    h = keras.layers.Dropout(input_rate)(inputs)
    for _ in range(2):
        h = keras.layers.Dense(240 * 5, kernel_constraint=constraint())(h)
        h = keras.layers.Reshape((240, 5))(h)
        h = keras.layers.Lambda(lambda t: tf.reduce_max(t, axis=-1))(h)
        h = keras.layers.Dropout(hidden_rate)(h)
    outputs = keras.layers.Dense(10, "softmax", kernel_constraint=constraint())(h)
    base = keras.Model(inputs, outputs)
    if spec["impl"] == "legacy-plain":
        base.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=spec["jit"],
        )
        return tf, base, base
    config = nsl.configs.make_adv_reg_config(
        multiplier=1.0,
        adv_step_size=spec["sigma"],
        adv_grad_norm="infinity" if spec["norm"] == "linf" else "l2",
        # Keyed by the input's name: NSL files a bare number under the key
        # "" and looks the bound up by feature name, so `clip_value_min=0.0`
        # with dict inputs clips nothing (its perturbed pixels leave [0, 1]).
        clip_value_min={"image": 0.0},
        clip_value_max={"image": 1.0},
    )
    model = nsl.keras.AdversarialRegularization(
        base, label_keys=["label"], adv_config=config
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=spec["jit"],
    )
    return tf, model, base


def _ours_model(spec):
    import keras

    import keras_gradreg as kg

    input_rate, hidden_rate = spec["dropout"]
    model = kg.models.mnist_maxout_mlp(
        input_shape=(784,),
        input_dropout=input_rate,
        hidden_dropout=hidden_rate,
        norm=spec["norm"],
        sigma=spec["sigma"],
        form="perturb",
        alpha=0.5,
        input_range=(0.0, 1.0),
        share_noise=spec["impl"] != "ours-fresh",
    )
    if spec["impl"] == "keras-plain":  # the same layers as a plain keras.Model
        model = keras.Model(model.inputs, model.outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        jit_compile=spec["jit"],
    )
    import tensorflow as tf

    return tf, model, model


def _fgsm_accuracy(tf, base, x, y, norm, eps):
    """Accuracy at the one-step attack, written in TensorFlow for the
    legacy model (keras_gradreg's `fgm` attacks the Keras 3 ones)."""
    correct = 0
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    for start in range(0, len(x), 500):
        xb = tf.constant(x[start : start + 500])
        yb = y[start : start + 500]
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = loss_fn(yb, base(xb, training=False))
        g = tape.gradient(loss, xb)
        if norm == "linf":
            step = tf.sign(g)
        else:
            step = g / tf.maximum(tf.norm(g, axis=1, keepdims=True), 1e-12)
        moved = tf.clip_by_value(xb + eps * step, 0.0, 1.0)
        correct += int(tf.reduce_sum(tf.cast(
            tf.argmax(base(moved, training=False), 1) == yb, tf.int32
        )))  # fmt: skip
    return correct / len(x)


def worker(spec: dict) -> None:
    """Trains one configuration an epoch per "epoch" line read from stdin,
    answering `RESULT {json}` lines; "evaluate" reports the accuracies."""
    import numpy as np

    with np.load(spec["data"]) as data:
        x_train, y_train = data["x_train"], data["y_train"]
        x_test, y_test = data["x_test"], data["y_test"]
    prepare = lambda a: (a.reshape(len(a), -1) / 255.0).astype("float32")  # noqa: E731
    x_train, x_test = prepare(x_train), prepare(x_test)
    x_train, y_train = x_train[: spec["train_limit"]], y_train[: spec["train_limit"]]
    y_train, y_test = y_train.astype("int32"), y_test.astype("int32")
    legacy = spec["impl"] in ("nsl", "legacy-plain")
    nsl = spec["impl"] == "nsl"
    if legacy:
        tf, model, base = _nsl_model(spec)
    else:
        import keras

        keras.utils.set_random_seed(spec["seed"])
        tf, model, base = _ours_model(spec)
    tf.random.set_seed(spec["seed"])
    data = _pipeline(tf, x_train, y_train, spec["batch"], as_dict=nsl)
    # Tracing and compilation: untimed.
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    for line in sys.stdin:
        command = line.strip()
        if command == "epoch":
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, shuffle=False)
            answer = {"seconds": time.perf_counter() - start}
        elif command == "evaluate":
            limit = 10_000
            if legacy:
                predictions = base.predict(x_train[:limit], batch_size=500, verbose=0)
                train = float(np.mean(predictions.argmax(1) == y_train[:limit]))
                fgsm = _fgsm_accuracy(
                    tf, base, x_test, y_test, spec["norm"], spec["sigma"]
                )
            else:
                import keras_gradreg as kg

                train = kg.classification_accuracy(
                    model, x_train[:limit], y_train[:limit]
                )
                fgsm = kg.fgsm_accuracy(
                    model, x_test, y_test, eps=spec["sigma"], norm=spec["norm"]
                )
            answer = {"train_accuracy": train, "fgsm_accuracy": float(fgsm)}
        else:
            return
        print("RESULT " + json.dumps(answer), flush=True)


# --- parent side: start the workers, interleave, report ---------------------


class Worker:
    def __init__(self, name, impl, backend, jit, spec, extra_env=None):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.update(extra_env or {})
        if impl in ("nsl", "legacy-plain"):
            env["TF_USE_LEGACY_KERAS"] = "1"
        spec = {**spec, "impl": impl, "jit": jit}
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"{self.name}: the worker stopped (see its stderr above)")

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def run_norm(norm: str, args, data_path: str) -> dict:
    spec = {
        "norm": norm,
        "sigma": NORMS[norm],
        "batch": args.batch,
        "train_limit": args.train_limit,
        "seed": args.seed,
        "data": data_path,
        "dropout": (0.0, 0.0) if args.no_dropout else DROPOUT,
    }
    configs = CONFIGS + (PLAIN if args.with_plain else [])
    workers = [
        Worker(name, impl, backend, jit, spec, *extra)
        for name, impl, backend, jit, *extra in configs
    ]
    examples = (min(args.train_limit, 60_000) // args.batch) * args.batch
    speeds = {w.name: [] for w in workers}
    try:
        for round_ in range(args.rounds):
            for w in workers:
                speeds[w.name].append(examples / w.ask("epoch")["seconds"])
            print(f"{norm}: round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        checks = {w.name: w.ask("evaluate") for w in workers}
    finally:
        for w in workers:
            w.close()
    ratios = {}
    for ours, theirs in PAIRS:
        paired = [a / b for a, b in zip(speeds[ours], speeds[theirs])]
        ratios[f"{ours} / {theirs}"] = {
            "median": statistics.median(paired),
            "min": min(paired),
            "max": max(paired),
        }
    if args.with_plain:
        for adversarial, plain in OWN_PLAIN.items():
            paired = [a / b for a, b in zip(speeds[plain], speeds[adversarial])]
            ratios[f"{adversarial}: step / own plain step"] = {
                "median": statistics.median(paired),
                "min": min(paired),
                "max": max(paired),
            }
    return {
        "sigma": NORMS[norm],
        "examples_per_second": {k: statistics.median(v) for k, v in speeds.items()},
        "ratios": ratios,
        "checks": checks,
        "epochs_trained": args.rounds + 1,
    }


def report(results: dict) -> str:
    lines = []
    for norm, result in results.items():
        lines += [
            f"\n{norm}, sigma {result['sigma']:g} "
            f"({result['epochs_trained']} epochs each)\n",
            "| configuration | examples/s | clean train acc. | FGSM test acc. |",
            "|---|---:|---:|---:|",
        ]
        for name, speed in result["examples_per_second"].items():
            check = result["checks"][name]
            lines.append(
                f"| {name} | {speed:,.0f} | {check['train_accuracy']:.2%} | "
                f"{check['fgsm_accuracy']:.2%} |"
            )
        lines += ["", "| ratio | median | min | max |", "|---|---:|---:|---:|"]
        for pair, r in result["ratios"].items():
            lines.append(
                f"| {pair} | {r['median']:.2f}x | {r['min']:.2f}x | {r['max']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-limit", type=int, default=60_000)
    parser.add_argument("--norms", nargs="+", choices=list(NORMS), default=list(NORMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--with-plain", action="store_true",
        help="also time plain training, for each step's cost over its own plain step",
    )  # fmt: skip
    parser.add_argument(
        "--no-dropout", action="store_true",
        help="drop the dropout layers from both (how much of the gap is drawing masks)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="JSON results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return {}
    for name in ("rounds", "batch", "train_limit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. "
                         f"Received: {getattr(args, name)}")  # fmt: skip
    if args.train_limit < args.batch:
        parser.error(
            f"--train-limit must be at least --batch ({args.batch}). "
            f"Received: {args.train_limit}"
        )
    if not (LEGACY / "neural_structured_learning").is_dir():
        parser.error(f"no NSL install in {LEGACY}: run `make bench-legacy-setup`")
    from keras_gradreg import datasets

    data_path = datasets.find_dataset_file("mnist.npz")
    if data_path is None:
        parser.error("no local mnist.npz: set $KERAS_GRADREG_DATA")
    results = {norm: run_norm(norm, args, str(data_path)) for norm in args.norms}
    print(report(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
