"""Train a robust convolutional network on your own folder of images.

The folder holds one subfolder of images per class, with or without a
held-out split:

    DATA/train/<class>/*.jpg    DATA/test/<class>/*.jpg
    DATA/<class>/*.jpg          (a seeded --test-split of them held out)

`keras.utils.image_dataset_from_directory` reads the images (JPEG, PNG,
BMP or GIF, resized to `--image-size`) into memory, scaled to [0, 1]. A
small convolutional network trains as a member of the family, by default
FGSM from a random start (`norm="linf", form="fgsm_rs"`, Wong et al. 2020)
at linf radius 8/255 with half the loss on the clean images (`alpha=0.5`)
and sigma warmed up over the first two epochs (`SigmaSchedule`); `--sigma
0` trains it plainly. Then `kg.evaluate_robustness` attacks the first
`--robust-points` held-out images with the standard suite (AutoAttack's
APGD-CE, APGD-T and Square) at radius `--sigma` (8/255 when trained
plainly), and the model is saved as `<output>/model.keras` for
`examples/evaluate_saved_model.py`.

The default folder is `cifar10-jpeg` where `kg.datasets` looks
(`$KERAS_GRADREG_DATA`, then `~/.keras/datasets`), a JPEG copy of CIFAR-10
(results on it are "CIFAR-10 (JPEG copy)"); with the defaults (the first
10,000 training images, 5 epochs) it runs in a few minutes on 2 CPU cores.

Usage:
    KERAS_BACKEND=jax python examples/train_image_folder.py
    python examples/train_image_folder.py --data ~/photos --image-size 64 \\
        --train-limit 0 --epochs 20 --output runs/photos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer, SigmaSchedule


def read_folder(folder, image_size, limit, seed, split=None, subset=None):
    """The first `limit` images of `folder` (all when 0) in one seeded
    shuffle, scaled to [0, 1], their labels and the class names (the names
    of the subfolders, in alphabetical order)."""
    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=(image_size, image_size), batch_size=None,
        shuffle=True, seed=seed, validation_split=split, subset=subset,
    )  # fmt: skip
    names = dataset.class_names
    if limit:
        dataset = dataset.take(limit)
    x, y = zip(*dataset.batch(1024).as_numpy_iterator())
    return np.concatenate(x) / np.float32(255), np.concatenate(y), names


def build_network(image_size, classes, filters, **regularizer) -> kg.GradRegModel:
    """A small convolutional network: per entry of `filters`, a 3 x 3
    convolution and 2 x 2 max pooling; then a dense layer of 128 units."""
    inputs = keras.Input((image_size, image_size, 3))
    h = inputs
    for width in filters:
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(h))
    outputs = keras.layers.Dense(classes, activation="softmax")(h)
    return kg.GradRegModel(inputs, outputs, input_range=(0.0, 1.0), **regularizer)


def _arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None,
        help="default: cifar10-jpeg where kg.datasets looks ($KERAS_GRADREG_DATA, "
        "~/.keras/datasets)",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--sigma", type=float, default=8 / 255)
    parser.add_argument("--form", choices=kg.FORMS, default="fgsm_rs")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="the clean loss's weight, in [0, 1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2,
        help="epochs over which sigma grows linearly to --sigma (0: none)",
    )  # fmt: skip
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--train-limit", type=int, default=10_000,
        help="train on the first N images (0: all)",
    )  # fmt: skip
    parser.add_argument(
        "--test-limit", type=int, default=2_000,
        help="test on the first N held-out images (0: all)",
    )  # fmt: skip
    parser.add_argument(
        "--test-split", type=float, default=0.2,
        help="the fraction held out when DATA has no test/ folder",
    )  # fmt: skip
    parser.add_argument("--robust-points", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/image_folder"))
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    for name in ("image_size", "epochs", "batch_size", "robust_points"):
        if getattr(args, name) < 1:
            value = getattr(args, name)
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    for name in ("train_limit", "test_limit", "sigma", "warmup"):
        if getattr(args, name) < 0:
            value = getattr(args, name)
            parser.error(f"--{name.replace('_', '-')} must be >= 0. Received: {value}")
    if not 0 <= args.alpha < 1:
        parser.error(f"--alpha must be in [0, 1). Received: {args.alpha}")
    if not 0 < args.test_split < 1:
        parser.error(f"--test-split must be in (0, 1). Received: {args.test_split}")
    if min(args.filters) < 1:
        parser.error(f"--filters must be >= 1. Received: {args.filters}")
    if args.data is None:
        args.data = kg.datasets.find_dataset_file("cifar10-jpeg")
        if args.data is None:
            parser.error(
                "--data must be given: no cifar10-jpeg folder in $KERAS_GRADREG_DATA "
                "or ~/.keras/datasets"
            )
    if not args.data.is_dir():
        parser.error(
            f"--data must be a folder of class subfolders. Received: {args.data}"
        )
    return args


def main(argv=None) -> dict:
    args = _arguments(argv)
    size, seed = args.image_size, args.seed
    if (args.data / "train").is_dir() and (args.data / "test").is_dir():
        *train, names = read_folder(args.data / "train", size, args.train_limit, seed)
        *test, test_names = read_folder(args.data / "test", size, args.test_limit, seed)
        if test_names != names:
            raise ValueError(
                f"The classes of {args.data / 'test'} must be those of "
                f"{args.data / 'train'}. Received: {test_names} and {names}"
            )
    else:  # one seeded split of the same folder
        split = {"split": args.test_split, "seed": seed}
        *train, names = read_folder(args.data, size, args.train_limit, **split,
                                    subset="training")  # fmt: skip
        *test, _ = read_folder(args.data, size, args.test_limit, **split,
                               subset="validation")  # fmt: skip
    x_test, y_test = test
    print(
        f"{args.data}: {len(names)} classes, {len(x_test)} held-out images; "
        f"backend {keras.backend.backend()}"
    )

    keras.utils.set_random_seed(seed)
    regularizer = {
        "norm": args.norm, "sigma": args.sigma, "form": args.form, "alpha": args.alpha,
    }  # fmt: skip
    model = build_network(size, len(names), args.filters, **regularizer)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    callbacks = [timer]
    if args.sigma > 0 and args.warmup > 0:  # sigma grows to --sigma
        callbacks.append(SigmaSchedule.linear(args.sigma, epochs=args.warmup))
    model.fit(
        *train, batch_size=args.batch_size, epochs=args.epochs,
        verbose=args.verbose, callbacks=callbacks,
    )  # fmt: skip

    eps = args.sigma or 8 / 255
    points = x_test[: args.robust_points], y_test[: args.robust_points]
    report = kg.evaluate_robustness(
        model, *points, [args.norm], [eps], "standard", seed=seed, verbose=0
    )
    print(report)
    args.output.mkdir(parents=True, exist_ok=True)
    model.save(args.output / "model.keras")
    summary = {
        "regularizer": regularizer,
        "clean": kg.classification_accuracy(model, x_test, y_test),
        "robust": report.accuracy(args.norm, eps),
        "robust_points": len(points[0]),
        "seconds_per_epoch": timer.median,
    }
    print(
        f"clean accuracy {summary['clean']:.2%} on {len(x_test)} held-out images; "
        f"robust accuracy {summary['robust']:.2%} (standard suite, {args.norm} "
        f"eps={eps:.4g}, {len(points[0])} images); {timer.median:.1f} s/epoch\n"
        f"-> {args.output / 'model.keras'}"
    )
    return summary


if __name__ == "__main__":
    main()
