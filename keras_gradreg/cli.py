"""The `keras-gradreg` command line (also `python -m keras_gradreg`).

    keras-gradreg train --dataset mnist --model maxout_mlp --norm linf \\
        --sigma 0.1 --form penalty --epochs 10 --output runs/linf

writes to the output folder: `model.keras`, `history.csv` (per epoch),
`results.json` (clean test accuracy and error, FGSM accuracy, wall time, all
settings, backend, library versions) and learning-curve PNGs.

    keras-gradreg evaluate --model-path runs/linf/model.keras --dataset mnist \\
        --norms linf l2 --attacks fgm pgd --steps 20 --output runs/linf/robustness

attacks a saved model on the test set and writes `report.md` (clean and
robust accuracy per attack, norm and eps, with the worst case and the
gradient-masking checks), `robustness.json`, `robust_accuracy.png` and
`gradients.png` (inputs, dL/dx and worst-case perturbations).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

from keras_gradreg.regularizer import FORMS

DATASETS = ("mnist", "fashion_mnist", "cifar10")
MODELS = ("maxout_mlp", "mnist_conv_maxout", "cifar10_conv_maxout")
SCHEDULES = ("constant", "cosine", "exponential")


def _norm(text):
    if text.lower() in ("linf", "l2", "l1", "inf"):
        return text.lower()
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be linf, l2, l1 or a number p >= 1 (received {text!r})"
        ) from None


def _number(kind, allow_zero=False):
    """An argparse type: a finite `kind` > 0 (>= 0 with `allow_zero`)."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a {kind.__name__} (received {text!r})"
            ) from None
        in_range = value >= 0 if allow_zero else value > 0
        if not in_range or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {bound} (received {text!r})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-gradreg",
        description="Train and evaluate members of the unified gradient regularization family.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one model and write its results")
    train.add_argument("--dataset", choices=DATASETS, default="mnist")
    train.add_argument(
        "--data-dir",
        default=None,
        help="folder with the data (default: $KERAS_GRADREG_DATA, Keras cache)",
    )
    train.add_argument("--model", choices=MODELS, default="maxout_mlp")
    train.add_argument(
        "--width",
        type=_number(float),
        default=1.0,
        help="width multiplier (cifar10_conv_maxout)",
    )
    train.add_argument(
        "--norm",
        type=_norm,
        default="l2",
        help="perturbation norm: linf, l2, l1 or p >= 1",
    )
    train.add_argument(
        "--sigma",
        type=float,
        default=0.1,
        help="perturbation radius (0 trains plainly)",
    )
    train.add_argument("--form", choices=FORMS, default="penalty")
    train.add_argument(
        "--alpha", type=float, default=0.0, help="weight of the clean loss, in [0, 1)"
    )
    train.add_argument("--fd-step", type=float, default=0.01)
    train.add_argument(
        "--steps", type=_number(int), default=7, help="ascent steps (multistep form)"
    )
    train.add_argument(
        "--step-size",
        type=_number(float),
        default=None,
        help="multistep step length (default 2.5 * sigma / steps)",
    )
    train.add_argument(
        "--no-random-start",
        dest="random_start",
        action="store_false",
        help="start the multistep ascent at x",
    )
    train.add_argument("--epochs", type=_number(int), default=10)
    train.add_argument("--batch-size", type=_number(int), default=128)
    train.add_argument(
        "--lr", type=_number(float), default=1e-3, help="initial learning rate (Adam)"
    )
    train.add_argument("--lr-schedule", choices=SCHEDULES, default="constant")
    train.add_argument(
        "--validation-size",
        type=int,
        default=0,
        help="hold out the last N training images",
    )
    train.add_argument(
        "--limit",
        type=_number(int),
        default=None,
        help="use only the first N training and test images",
    )
    train.add_argument(
        "--fgsm-eps",
        type=_number(float, allow_zero=True),
        default=0.1,
        help="linf radius of the FGSM evaluation",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto"
    )
    train.add_argument("--output", required=True, help="output folder")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)

    evaluate = commands.add_parser(
        "evaluate",
        help="attack a saved model and write a robustness report with pictures",
    )
    evaluate.add_argument("--model-path", required=True, help="a saved .keras model")
    evaluate.add_argument("--dataset", choices=DATASETS, default="mnist")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument(
        "--limit", type=_number(int), default=None, help="first N test images"
    )
    evaluate.add_argument(
        "--norms", nargs="+", choices=("linf", "l2", "l1"), default=["linf", "l2"]
    )
    for norm, default in (
        ("linf", (0.1, 0.2)),
        ("l2", (1.0, 2.0)),
        ("l1", (5.0, 10.0)),
    ):
        evaluate.add_argument(
            f"--{norm}-eps",
            nargs="+",
            type=_number(float, allow_zero=True),
            default=list(default),
            help=f"radii for {norm} (default: {' '.join(map(str, default))})",
        )
    evaluate.add_argument(
        "--attacks",
        nargs="+",
        choices=("fgm", "pgd", "apgd-ce", "apgd-t", "square", "standard"),
        default=["fgm", "pgd"],
        help="apgd-ce, apgd-t and square are AutoAttack's (linf and l2); "
        "'standard' runs AutoAttack's ensemble alone",
    )
    evaluate.add_argument("--steps", type=_number(int), default=20, help="PGD steps")
    evaluate.add_argument(
        "--restarts", type=_number(int), default=1, help="PGD random restarts"
    )
    evaluate.add_argument(
        "--examples", type=_number(int), default=3, help="images in the gradient grid"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", required=True, help="output folder")
    return parser


def _load(args):
    from keras_gradreg import datasets

    loader = {
        "mnist": datasets.load_mnist,
        "fashion_mnist": datasets.load_fashion_mnist,
        "cifar10": datasets.load_cifar10,
    }[args.dataset]
    kwargs = {"validation_size": args.validation_size}
    if args.dataset == "cifar10":
        *splits, label = loader(args.data_dir, return_source=True, **kwargs)
    else:
        splits, label = (
            loader(args.data_dir, **kwargs),
            {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[args.dataset],
        )
    if args.limit:
        splits = [(x[: args.limit], y[: args.limit]) for x, y in splits]
    return splits, label


def _output_folder(path) -> Path:
    """`--output` as a folder (created), refusing an existing file."""
    output = Path(path)
    if output.exists() and not output.is_dir():
        raise ValueError(
            f"--output must name a folder; {output} is an existing file. "
            f"Received: --output {path}"
        )
    return output


def _regularizer(args):
    from keras_gradreg import GradientRegularizer

    return GradientRegularizer(
        norm=args.norm,
        sigma=args.sigma,
        form=args.form,
        alpha=args.alpha,
        fd_step=args.fd_step,
        input_range=(0.0, 1.0),
        steps=args.steps,
        step_size=args.step_size,
        random_start=args.random_start,
    )


def _build(args, input_shape, regularizer):
    from keras_gradreg import models

    regularizer = {"regularizer": regularizer}
    if args.model == "maxout_mlp":
        return models.mnist_maxout_mlp(input_shape=input_shape, **regularizer)
    if args.model == "mnist_conv_maxout":
        return models.mnist_conv_maxout(input_shape=input_shape, **regularizer)
    return models.cifar10_conv_maxout(
        input_shape=input_shape, width=args.width, **regularizer
    )


def _learning_rate(args, steps):
    import keras

    if args.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps)
    if args.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            args.lr, decay_steps=max(1, steps // 10), decay_rate=0.8
        )
    return args.lr


def train(args) -> dict:
    import keras

    import keras_gradreg as kg
    from keras_gradreg.plots import plot_learning_curves

    regularizer = _regularizer(args)  # bad values fail before any work
    output = _output_folder(args.output)
    output.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    splits, dataset_label = _load(args)
    (x_train, y_train), *rest = splits
    validation, (x_test, y_test) = (rest[0] if len(rest) == 2 else None), rest[-1]

    model = _build(args, x_train.shape[1:], regularizer)
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(args, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=validation,
        verbose=args.verbose,
        callbacks=[keras.callbacks.CSVLogger(output / "history.csv")],
    ).history
    wall = time.perf_counter() - start
    model.save(output / "model.keras")

    clean = kg.classification_accuracy(model, x_test, y_test)
    fgsm = kg.fgsm_accuracy(model, x_test, y_test, eps=args.fgsm_eps)
    figures = plot_learning_curves(
        history,
        output / "curves",
        title=f"{args.model}, {model.regularizer.norm} {args.form}",
    )
    results = {
        "dataset": dataset_label,
        "test_accuracy": clean,
        "test_error": 1.0 - clean,
        "fgsm_accuracy": fgsm,
        "fgsm_eps": args.fgsm_eps,
        "wall_time_s": wall,
        "seconds_per_epoch": wall / args.epochs,
        "final_epoch": {k: float(v[-1]) for k, v in history.items()},
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "regularizer": model.regularizer.get_config(),
        "backend": keras.backend.backend(),
        "versions": _versions(),
        "train_examples": int(len(x_train)),
        "test_examples": int(len(x_test)),
        "figures": [p.name for p in figures],
    }
    (output / "results.json").write_text(
        json.dumps(results, indent=2, default=_json_default)
    )
    print(
        f"{dataset_label}: test error {1 - clean:.2%}, FGSM (eps={args.fgsm_eps}) "
        f"accuracy {fgsm:.2%}, {wall / args.epochs:.1f} s/epoch -> {output}"
    )
    return results


def evaluate(args) -> dict:
    import keras

    import keras_gradreg as kg
    from keras_gradreg.plots import plot_input_gradients, plot_robust_accuracy

    path = Path(args.model_path)
    if not path.is_file():
        raise FileNotFoundError(f"--model-path: no such file: {path}")
    output = _output_folder(args.output)
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # zip, JSON and deserialization errors alike
        raise ValueError(
            f"--model-path: {path} is not a loadable Keras model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Save models with "
            "`model.save('name.keras')`."
        ) from error
    args.validation_size = 0
    splits, dataset_label = _load(args)
    x_test, y_test = splits[-1]
    output.mkdir(parents=True, exist_ok=True)
    if "standard" in args.attacks:
        if len(args.attacks) > 1:
            raise ValueError(
                "--attacks standard runs AutoAttack's ensemble alone. Received: "
                f"--attacks {' '.join(args.attacks)}"
            )
        attacks = "standard"
    else:
        attacks = [
            kg.attacks.PGD(steps=args.steps, restarts=args.restarts)
            if name == "pgd"
            else kg.attacks.get(name)
            for name in args.attacks
        ]
    eps = {norm: getattr(args, f"{norm}_eps") for norm in args.norms}
    start = time.perf_counter()
    # Square's windows need images: flat MNIST rows are 28 x 28 images.
    flat_images = {"mnist": (28, 28), "fashion_mnist": (28, 28)}
    image_shape = flat_images.get(args.dataset) if x_test.ndim == 2 else None
    report = kg.evaluate_robustness(
        model, x_test, y_test, args.norms, eps, attacks, seed=args.seed,
        image_shape=image_shape,
    )  # fmt: skip
    wall = time.perf_counter() - start
    label = path.parent.name or path.stem
    figures = [
        plot_robust_accuracy({label: report}, output / "robust_accuracy.png"),
        plot_input_gradients(
            {label: model},
            x_test[: args.examples],
            y_test[: args.examples],
            output / "gradients.png",
            norms=args.norms,
            eps={norm: values[0] for norm, values in eps.items() if values},
        ),
    ]
    lines = [
        f"# Robustness of `{path}`",
        "",
        f"{dataset_label} test set, {report.num_examples} images; backend "
        f"{keras.backend.backend()}; {wall:.0f} s. A point is robust only if it "
        "survives every attack (worst case).",
        "",
        report.to_markdown(),
        "",
        "![robust accuracy against eps](robust_accuracy.png)",
        "",
        "![input gradients and worst-case perturbations](gradients.png)",
    ]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    results = {
        "model": str(path),
        "dataset": dataset_label,
        "backend": keras.backend.backend(),
        "wall_time_s": wall,
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "report": report.to_dict(),
        "figures": [p.name for p in figures],
        "versions": _versions(),
    }
    (output / "robustness.json").write_text(
        json.dumps(results, indent=2, default=_json_default)
    )
    print(report.to_markdown())
    print(f"-> {output / 'report.md'}")
    return results


def _versions():
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in (
        "keras",
        "keras-gradreg",
        "numpy",
        "tensorflow-cpu",
        "tensorflow",
        "jax",
        "torch",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "evaluate":
            evaluate(args)
    except (ValueError, FileNotFoundError) as error:
        message = (
            str(error).splitlines()[0] if isinstance(error, ValueError) else str(error)
        )
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
