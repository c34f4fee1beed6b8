"""Evaluate a saved `.keras` classifier: its robustness report and pictures.

Loads MODEL (any Keras classifier saved with `model.save("name.keras")`,
trained with keras_gradreg or not), attacks the first `--points` test
images at each radius of `--eps` in the `--norm` ball and prints the
report: clean accuracy and the robust accuracy after each attack, by
default of the standard suite (AutoAttack's APGD-CE, APGD-T and Square, as
a cascade; `--attacks fast` runs FGM and PGD-20, quicker but an upper
bound). It writes to `--output`:

- `report.md`, the report's table;
- `robust_accuracy.png`, robust accuracy against the radius
  (`kg.plots.plot_robust_accuracy`);
- `gradients.png`, a few test images with the model's input gradient and
  the worst-case perturbation of each norm (`kg.plots.plot_input_gradients`).

The test images come from a folder of class subfolders (`--images DIR`,
read with `keras.utils.image_dataset_from_directory` at the model's input
size and scaled to [0, 1]; the class order must be the one the model was
trained with) or from a dataset the library loads (`--dataset mnist`,
`fashion_mnist` or `cifar10`). The model's inputs must be pixels in
[0, 1]. The defaults (200 images, linf radii 4/255 and 8/255) suit a small
CIFAR-10 network and take a few minutes on 2 CPU cores.

Usage:
    python examples/train_image_folder.py   # writes runs/image_folder/model.keras
    KERAS_BACKEND=jax python examples/evaluate_saved_model.py \\
        runs/image_folder/model.keras --images $KERAS_GRADREG_DATA/cifar10-jpeg/test
    python examples/evaluate_saved_model.py mnist_model.keras --dataset mnist \\
        --eps 0.1 0.2 0.3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg import plots

LOADERS = {
    "mnist": kg.datasets.load_mnist,
    "fashion_mnist": kg.datasets.load_fashion_mnist,
    "cifar10": kg.datasets.load_cifar10,
}


def read_images(folder, model, limit, seed):
    """The first `limit` images of `folder` (one subfolder per class, one
    seeded shuffle) at the model's input size, in [0, 1], with their labels
    and the class names."""
    shape = model.input_shape[1:]
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
        raise ValueError(
            "--images needs a model whose inputs are images (height, width, "
            f"channels), with 1, 3 or 4 channels. Received: input shape {shape}"
        )
    height, width, channels = shape
    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=(height, width), batch_size=None, shuffle=True,
        seed=seed, color_mode={1: "grayscale", 3: "rgb", 4: "rgba"}[channels],
    )  # fmt: skip
    names = dataset.class_names
    x, y = zip(*dataset.take(limit).batch(1024).as_numpy_iterator())
    return np.concatenate(x) / np.float32(255), np.concatenate(y), names


def _arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a .keras file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="a folder of class subfolders")
    source.add_argument("--dataset", choices=list(LOADERS))
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--eps", type=float, nargs="+", default=[4 / 255, 8 / 255])
    parser.add_argument("--attacks", choices=("standard", "fast"), default="standard")
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--examples", type=int, default=3, help="images drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=None, help="default MODEL's folder"
    )
    args = parser.parse_args(argv)
    for name in ("points", "examples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {getattr(args, name)}")
    if min(args.eps) <= 0:
        parser.error(f"--eps must be > 0. Received: {args.eps}")
    if not args.model.is_file():
        parser.error(f"MODEL must be a .keras file. Received: {args.model}")
    if args.images is not None and not args.images.is_dir():
        parser.error(
            f"--images must be a folder of class subfolders. Received: {args.images}"
        )
    return args


def main(argv=None) -> kg.RobustnessReport:
    args = _arguments(argv)
    model = keras.saving.load_model(args.model)
    if args.images is not None:
        x, y, names = read_images(args.images, model, args.points, args.seed)
        source = str(args.images)
    else:
        _, (x, y) = LOADERS[args.dataset]()
        x, y = x[: args.points], y[: args.points]
        names = kg.datasets.CIFAR10_CLASSES if args.dataset == "cifar10" else None
        source = args.dataset
    print(f"{args.model}: {len(x)} test images of {source}")

    report = kg.evaluate_robustness(
        model, x, y, [args.norm], args.eps, args.attacks, seed=args.seed,
        verbose=0,
    )  # fmt: skip
    print(report)
    output = args.output or args.model.parent
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text(
        f"# Robustness of `{args.model.name}`\n\n{len(x)} test images of "
        f"{source}; backend {keras.backend.backend()}.\n\n{report.to_markdown()}\n"
    )
    label = args.model.stem
    pictures = [
        plots.plot_robust_accuracy({label: report}, output / "robust_accuracy.png"),
        plots.plot_input_gradients(
            {label: model}, x[: args.examples], y[: args.examples],
            output / "gradients.png", norms=(args.norm,),
            eps={args.norm: max(args.eps)}, class_names=names,
        ),
    ]  # fmt: skip
    print("->", output / "report.md", *pictures)
    return report


if __name__ == "__main__":
    main()
