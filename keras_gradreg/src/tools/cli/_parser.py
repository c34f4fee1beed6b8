"""The arguments of `keras-gradreg train` and `keras-gradreg evaluate`."""

from __future__ import annotations

import argparse
import math

from keras_gradreg.src.family.regularizer import FORMS

DATASETS = ("mnist", "fashion_mnist", "cifar10")
MODELS = ("maxout_mlp", "mnist_conv_maxout", "cifar10_conv_maxout")
SCHEDULES = ("constant", "cosine", "exponential")
#: `train --protocol`: Adam for `--epochs`, or the maxout papers' two stages.
PROTOCOLS = ("adam", "maxout")
#: `evaluate`'s radii per norm when `--<norm>-eps` is not given.
DEFAULT_EPS = {"linf": [0.1, 0.2], "l2": [1.0, 2.0], "l1": [5.0, 10.0]}


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
        default=None,
        help="width multiplier of cifar10_conv_maxout (default 1)",
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
    train.add_argument(
        "--fd-step",
        type=_number(float),
        default=None,
        help="finite-difference step (finite_difference form; default 0.01)",
    )
    train.add_argument(
        "--steps",
        type=_number(int),
        default=None,
        help="ascent steps (multistep form; default 7)",
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
        default=None,
        help="start the multistep ascent at x",
    )
    train.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="adam",
        help="adam: Adam for --epochs; maxout: the paper's network and the "
        "maxout papers' two stages (early stopping on the validation split, "
        "then all training images until matched), resumable",
    )
    train.add_argument(
        "--epochs",
        type=_number(int),
        default=None,
        help="epochs (adam, default 10); the most epochs of stage 1 (maxout, "
        "default the protocol's 1000)",
    )
    train.add_argument(
        "--patience",
        type=_number(int),
        default=None,
        help="early-stopping patience of stage 1 (maxout; default 100)",
    )
    train.add_argument(
        "--continue-epochs",
        type=_number(int),
        default=None,
        help="the most epochs of stage 2 (maxout; default 500)",
    )
    train.add_argument(
        "--batch-size",
        type=_number(int),
        default=None,
        help="default 128 (adam), the protocol's (maxout: 100 or 128)",
    )
    train.add_argument(
        "--lr",
        type=_number(float),
        default=None,
        help="initial learning rate: Adam's (default 1e-3) or SGD's (maxout: "
        "the protocol's, 0.1 or 0.05)",
    )
    train.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=None,
        help="Adam's schedule (default constant); the maxout protocol has its own",
    )
    train.add_argument(
        "--validation-size",
        type=int,
        default=None,
        help="hold out the last N training images (default 0; maxout 10000)",
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
    for norm, default in DEFAULT_EPS.items():
        evaluate.add_argument(
            f"--{norm}-eps",
            nargs="+",
            type=_number(float, allow_zero=True),
            default=None,
            help=f"radii for {norm} (default: {' '.join(map(str, default))})",
        )
    evaluate.add_argument(
        "--attacks",
        nargs="+",
        choices=(
            "standard",
            "standard-no-fab",
            "rand",
            "fast",
            "fgm",
            "pgd",
            "apgd-ce",
            "apgd-t",
            "fab-t",
            "square",
        ),
        default=["standard"],
        help="'standard' (the default) runs AutoAttack's standard version "
        "(APGD-CE, APGD-T, FAB-T, Square) alone; 'standard-no-fab' the same "
        "without FAB-T, quicker; 'rand' AutoAttack's version for models "
        "random at inference (APGD-CE and APGD-DLR over 20 draws); 'fast' is "
        "FGM and PGD-20, an upper bound; "
        "apgd-ce, apgd-t, fab-t and square are AutoAttack's (linf and l2)",
    )
    evaluate.add_argument(
        "--steps", type=_number(int), default=None, help="PGD steps (default 20)"
    )
    evaluate.add_argument(
        "--restarts",
        type=_number(int),
        default=None,
        help="PGD random restarts (default 1)",
    )
    evaluate.add_argument(
        "--noise-stds",
        nargs="+",
        type=_number(float, allow_zero=True),
        default=None,
        help="also test under additive Gaussian noise of these stds (the "
        "paper's Table IV), noisy images clipped to [0, 1] and not",
    )
    evaluate.add_argument(
        "--noise-draws",
        type=_number(int),
        default=None,
        help="noise draws averaged per std (default 5)",
    )
    evaluate.add_argument(
        "--examples", type=_number(int), default=3, help="images in the gradient grid"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", required=True, help="output folder")
    return parser
