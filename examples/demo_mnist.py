"""Plain training vs. two members of the family on MNIST, side by side.

Trains the same small network three times and prints clean and FGSM test
accuracy:

- plain: `keras.Model`-equivalent training (sigma = 0);
- FGSM adversarial training: the linf member, perturb form, alpha = 0.5
  (Goodfellow et al. 2015 as a special case of the family);
- L2 gradient penalty: the l2 member, exact penalty form (double backprop).

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
    parser.add_argument("--eps", type=float, default=0.1, help="FGSM radius (linf)")
    parser.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use only the first N training images",
    )
    parser.add_argument(
        "--test-limit", type=int, default=None, help="use only the first N test images"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "train_limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")

    (x_train, y_train), (x_test, y_test) = kg.datasets.load_mnist()
    x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
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
            x_train,
            y_train,
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=args.verbose,
            callbacks=[timer],
        )
        rows.append(
            {
                "model": label,
                "clean": kg.classification_accuracy(model, x_test, y_test),
                "fgsm": kg.fgsm_accuracy(model, x_test, y_test, eps=args.eps),
                "seconds_per_epoch": timer.median,
            }
        )

    print(f"\n| model | clean test acc. | FGSM acc. (linf eps={args.eps}) | s/epoch |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['clean']:.2%} | {row['fgsm']:.2%} "
            f"| {row['seconds_per_epoch']:.1f} |"
        )
    return rows


if __name__ == "__main__":
    main()
