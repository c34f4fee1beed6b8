"""Semi-supervised MNIST with 100 labels: the label-free member against
supervised-only training.

The classic benchmark (Miyato et al., 2018, Table 2: permutation-invariant
MNIST, 100 labels): 10 labeled images per class, all 60,000 training images
unlabeled, test error on the 10,000 test images. Every run trains the same
MLP on the same batches (`keras_gradreg.semi_supervised`): `--labeled-batch`
labeled rows and `--unlabeled-batch` unlabeled rows (weight 0). The
defaults are Miyato et al.'s code's (and the hand-written JAX check's,
`reproductions/semi_supervised_reference.py`): 784-1200-1200-10 with batch
normalization after every linear layer, 100 labeled and 250 unlabeled rows,
Adam at 2e-3 times 0.9 after each of 20 epochs of 500 updates.

- supervised only: a `GradRegModel` with sigma = 0, so only the labeled
  rows reach the loss;
- label-free member: `virtual=True, norm="l2"`, one power iteration at the
  default xi, the divergence on every row, for each l2 radius in
  `--sigma` (pixels in [0, 1]; 0.3 is Miyato et al.'s semi-supervised
  MNIST setting).

`--passes separate` (the default, Miyato et al.'s layout) passes the
labeled rows and the unlabeled ones through the network separately, each
normalized by its own batch statistics, with the divergence on the
unlabeled rows only (`labeled_rows`); `--passes mixed` runs every row in
one pass, which with batch normalization trains a network that fails on
new images (docs/results.md).

The last `--validation` training images (as Miyato et al., 1,000) are held
out of both pools; the radius with the lowest validation error is the one
reported, so the test set chooses nothing. docs/results.md records the
numbers. Results go to `--output` as JSON, one file per run; a finished run
is skipped when the script is run again.

Usage:
    KERAS_BACKEND=jax python examples/semi_supervised_mnist.py --sigma 5
    python examples/semi_supervised_mnist.py --epochs 1 --steps-per-epoch 20  # smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras

import keras_gradreg as kg
from keras_gradreg.semi_supervised import SemiSupervisedBatches, balanced_labels

RUNS = {
    "supervised": {"sigma": 0.0},
    "virtual": {"virtual": True, "norm": "l2", "form": "perturb"},
}


def _refuse_non_positive(parser, args, *names) -> None:
    """Exits through `parser.error` when a named argument (or an entry of a
    list-valued one) is given and not > 0."""
    for name in names:
        value = getattr(args, name)
        values = value if isinstance(value, list) else [value]
        if any(v is not None and v <= 0 for v in values):
            parser.error(f"--{name.replace('_', '-')} must be > 0. Received: {value}")


def _refuse_other_settings(parser, folder: Path, settings: dict) -> None:
    """Records `settings` in `folder/settings.json`, or exits through
    `parser.error` when the folder holds runs made with other settings."""
    path = folder / "settings.json"
    settings = json.loads(json.dumps(settings))  # tuples as JSON lists
    if not path.exists():
        path.write_text(json.dumps(settings, indent=2))
        return
    recorded = json.loads(path.read_text())
    changes = [
        f"{name}: {recorded.get(name)!r} -> {value!r}"
        for name, value in settings.items()
        if recorded.get(name) != value
    ]
    if changes:
        parser.error(
            f"--output {folder} holds runs made with other settings "
            f"({', '.join(changes)}); resume with the same settings or choose "
            "another --output."
        )


def _run_names(sigmas):
    return ["supervised"] + [f"virtual-sigma{sigma:g}" for sigma in sigmas]


def build_network(
    widths=(1200, 1200),
    batch_norm: bool = True,
    output_batch_norm: bool = True,
    **regularizer,
) -> kg.GradRegModel:
    """The permutation-invariant MLP of Miyato et al.: ReLU hidden layers and
    a softmax output, with batch normalization after every linear layer,
    the last included (as their code). `batch_norm=False` leaves it out of
    the hidden layers, `output_batch_norm=False` out of the last."""
    inputs = keras.Input((28, 28))
    h = keras.layers.Flatten()(inputs)
    for i, width in enumerate((*widths, 10)):
        hidden = i < len(widths)
        if batch_norm if hidden else output_batch_norm:
            h = keras.layers.Dense(width, use_bias=False)(h)
            h = keras.layers.BatchNormalization()(h)
        else:
            h = keras.layers.Dense(width)(h)
        h = keras.layers.Activation("relu" if hidden else "softmax")(h)
    return kg.GradRegModel(inputs, h, input_range=(0.0, 1.0), **regularizer)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--steps-per-epoch", type=int, default=500,
        help="updates per epoch (0: one pass over the unlabeled pool)",
    )  # fmt: skip
    parser.add_argument("--labeled-batch", type=int, default=100)
    parser.add_argument("--unlabeled-batch", type=int, default=250)
    parser.add_argument("--widths", type=int, nargs="+", default=[1200, 1200])
    parser.add_argument(
        "--sigma", type=float, nargs="+", default=[0.3, 1.0, 2.0],
        help="l2 radii of the label-free member; validation picks one",
    )  # fmt: skip
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--schedule", choices=("exponential", "cosine"), default="exponential",
        help="learning rate times --decay after every epoch, or cosine to 0",
    )  # fmt: skip
    parser.add_argument("--decay", type=float, default=0.9)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument(
        "--no-batch-norm", dest="batch_norm", action="store_false",
        help="leave out the batch normalization of every hidden layer",
    )  # fmt: skip
    parser.add_argument(
        "--no-output-batch-norm", dest="output_batch_norm", action="store_false",
        help="a plain softmax layer (with bias) instead of a normalized one",
    )  # fmt: skip
    parser.add_argument(
        "--passes", choices=("separate", "mixed"), default="separate",
        help="labeled and unlabeled rows in passes of their own, or in one",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/semi_supervised"))
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    if args.steps_per_epoch is not None and args.steps_per_epoch < 0:
        parser.error(
            f"argument --steps-per-epoch must be >= 0. Received: {args.steps_per_epoch}"
        )
    steps_per_epoch = args.steps_per_epoch or None
    _refuse_non_positive(
        parser,
        args,
        "labels_per_class",
        "epochs",
        "widths",
        "decay",
        "labeled_batch",
        "unlabeled_batch",
        "learning_rate",
        "validation",
        "test_limit",
        "sigma",
    )
    (x_train, y_train), (x_test, y_test) = kg.datasets.load_mnist()
    x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    x_val, y_val = x_train[-args.validation :], y_train[-args.validation :]
    x_train, y_train = x_train[: -args.validation], y_train[: -args.validation]
    labeled = balanced_labels(y_train, args.labels_per_class, seed=args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    # Each radius is a run of its own: more can be added to a folder later.
    ignored = ("runs", "output", "verbose", "sigma")
    settings = {k: v for k, v in vars(args).items() if k not in ignored}
    _refuse_other_settings(parser, args.output, settings)
    print(
        f"MNIST: {len(labeled)} labels, {len(x_train)} unlabeled, {len(x_val)} "
        f"validation and {len(x_test)} test images; backend "
        f"{keras.backend.backend()}"
    )
    results = {}
    names = _run_names(args.sigma)
    names = [n for n in names if n.split("-")[0] in args.runs]
    for name in names:
        path = args.output / f"{name}-seed{args.seed}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
            print(f"== {name}: done earlier ({path})")
            continue
        print(f"\n== {name}")
        keras.utils.set_random_seed(args.seed)
        regularizer = dict(RUNS[name.split("-")[0]])
        if regularizer.get("virtual"):
            regularizer["sigma"] = float(name.split("sigma")[1])
        if args.passes == "separate":
            regularizer["labeled_rows"] = args.labeled_batch
        batches = SemiSupervisedBatches(
            x_train[labeled],
            y_train[labeled],
            x_train,
            labeled_batch_size=args.labeled_batch,
            unlabeled_batch_size=args.unlabeled_batch,
            steps_per_epoch=steps_per_epoch,
            seed=args.seed,
            passes=args.passes,
        )
        total_steps = args.epochs * len(batches)
        model = build_network(
            args.widths, args.batch_norm, args.output_batch_norm, **regularizer
        )
        if args.schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(
                args.learning_rate, total_steps
            )
        else:
            rate = keras.optimizers.schedules.ExponentialDecay(
                args.learning_rate, len(batches), args.decay, staircase=True
            )
        model.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss="sparse_categorical_crossentropy",
            # Weighted: unlabeled rows (weight 0, placeholder label) do not count.
            weighted_metrics=["accuracy"],
            jit_compile=keras.backend.backend() != "torch",
        )
        start = time.perf_counter()
        history = model.fit(
            batches, epochs=args.epochs, validation_data=(x_val, y_val),
            verbose=args.verbose,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        results[name] = {
            "run": name,
            "regularizer": regularizer,
            "validation_error": 1.0 - kg.classification_accuracy(model, x_val, y_val),
            "test_error": 1.0 - kg.classification_accuracy(model, x_test, y_test),
            "train_seconds": seconds,
            "steps": total_steps,
            "final_loss": float(history.history["loss"][-1]),
            "settings": {k: str(v) for k, v in settings.items()},
            "validation_curve": history.history["val_accuracy"],
            "backend": keras.backend.backend(),
        }
        path.write_text(json.dumps(results[name], indent=2))
    virtual = [n for n in results if n.startswith("virtual")]
    chosen = min(virtual, key=lambda n: results[n]["validation_error"], default=None)
    print("\n| run | validation error | test error | training time |")
    print("|---|---:|---:|---:|")
    for name, row in results.items():
        mark = " (chosen on validation)" if name == chosen else ""
        print(
            f"| {name}{mark} | {row['validation_error']:.2%} | "
            f"{row['test_error']:.2%} | {row['train_seconds'] / 60:.1f} min |"
        )
    if results:
        print(
            f"Validation curves: {plot_curves(results, args.output / 'validation.png')}"
        )
    return results


def plot_curves(results: dict, path: Path) -> Path:
    """Validation error against the epoch, one line per run."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for name, row in results.items():
        error = [100.0 * (1.0 - a) for a in row["validation_curve"]]
        ax.plot(range(1, len(error) + 1), error, marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title("MNIST, 100 labels")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


if __name__ == "__main__":
    main()
