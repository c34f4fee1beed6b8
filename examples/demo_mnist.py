"""Plain training vs. two members of the family on MNIST, side by side.

Trains the same small network three times and prints, for each, clean test
accuracy, robust accuracy under the field's standard evaluation and the
seconds per epoch:

- plain: `keras.Model`-equivalent training (sigma = 0);
- FGSM adversarial training: the linf member, perturb form, alpha = 0.5
  (Goodfellow et al. 2015 as a special case of the family);
- L2 gradient penalty: the l2 member, exact penalty form (double backprop).

Robust accuracy is the standard suite's without FAB-T at linf eps 0.1 on
the first 1,000 test images: APGD-CE, APGD-T and Square as a cascade
(`"standard-no-fab"`; FAB-T rarely breaks a point the APGDs left, and
`--suite standard` adds it). `--fgsm` adds FGSM accuracy, an upper bound
that overstates single-step-trained models by tens of points.

MNIST comes from `$KERAS_GRADREG_DATA` (the Makefile points it at
../shared/data) or Keras's cache, else Keras downloads it.

Usage:
    KERAS_BACKEND=jax python examples/demo_mnist.py
    python examples/demo_mnist.py --epochs 1 --train-limit 2000   # a quick look
"""

from __future__ import annotations

import argparse

import keras

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer

MEMBERS = [
    ("plain (sigma=0)", {"sigma": 0.0}),
    (
        "FGSM adv. training (linf, perturb, alpha=0.5)",
        {"norm": "linf", "sigma": 0.1, "form": "perturb", "alpha": 0.5},
    ),
    (
        "L2 gradient penalty (l2, penalty)",
        {"norm": "l2", "sigma": 1.0, "form": "penalty"},
    ),
]


def build_network(**regularizer) -> kg.GradRegModel:
    inputs = keras.Input((28, 28))
    h = keras.layers.Flatten()(inputs)
    for _ in range(2):
        h = keras.layers.Dense(256, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return kg.GradRegModel(inputs, outputs, input_range=(0.0, 1.0), **regularizer)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.1, help="linf radius")
    parser.add_argument(
        "--robust-points", type=int, default=1000,
        help="test images the attacks run on (the first N)",
    )  # fmt: skip
    parser.add_argument(
        "--suite", choices=("standard-no-fab", "standard"), default="standard-no-fab",
        help="the attack suite (standard adds FAB-T)",
    )  # fmt: skip
    parser.add_argument(
        "--fgsm", action="store_true",
        help="also print FGSM accuracy (an upper bound on robust accuracy)",
    )  # fmt: skip
    parser.add_argument(
        "--train-limit", type=int, default=None,
        help="use only the first N training images",
    )  # fmt: skip
    parser.add_argument(
        "--test-limit", type=int, default=None, help="use only the first N test images"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "robust_points", "train_limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")

    (x_train, y_train), (x_test, y_test) = kg.datasets.load_mnist()
    x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    x_robust, y_robust = x_test[: args.robust_points], y_test[: args.robust_points]
    print(
        f"MNIST: {len(x_train)} training and {len(x_test)} test images; "
        f"backend {keras.backend.backend()}; {args.epochs} epochs each"
    )

    rows = []
    for label, regularizer in MEMBERS:
        print(f"\n== {label}")
        keras.utils.set_random_seed(args.seed)
        model = build_network(**regularizer)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        timer = EpochTimer()
        model.fit(
            x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
            verbose=args.verbose, callbacks=[timer],
        )  # fmt: skip
        report = kg.evaluate_robustness(
            model, x_robust, y_robust, ["linf"], [args.eps], args.suite,
            image_shape=(28, 28), seed=args.seed, verbose=0,
        )  # fmt: skip
        row = {
            "model": label,
            "clean": kg.classification_accuracy(model, x_test, y_test),
            "robust": report.accuracy("linf", args.eps),
            "seconds_per_epoch": timer.median,
        }
        if args.fgsm:
            row["fgsm"] = kg.fgsm_accuracy(model, x_robust, y_robust, eps=args.eps)
        rows.append(row)

    points = len(x_robust)
    fgsm = " FGSM acc. (upper bound) |" if args.fgsm else ""
    attacks = "APGD-CE, APGD-T" + (", FAB-T" if args.suite == "standard" else "")
    print(
        f"\n| model | clean test acc. | robust acc. ({attacks}, Square; linf "
        f"eps={args.eps:g}, {points:,} images) |{fgsm} s/epoch |"
    )
    print("|---|---:|---:|" + ("---:|" if args.fgsm else "") + "---:|")
    for row in rows:
        extra = f" {row['fgsm']:.2%} |" if args.fgsm else ""
        print(
            f"| {row['model']} | {row['clean']:.2%} | {row['robust']:.2%} |{extra} "
            f"{row['seconds_per_epoch']:.1f} |"
        )
    return rows


if __name__ == "__main__":
    main()
