"""Train PreActResNet-18 on CIFAR-10 at linf 8/255 with a fast
adversarial-training recipe, and test it under the standard suite.

The recipes are `keras_gradreg.recipes.CIFAR10_RECIPES`: the network
(`models.preact_resnet18`), per-image pad-crop-flip augmentation, SGD with
momentum 0.9 and weight decay 5e-4 on the cyclic learning rate, batch 128,
around one member of the family:

- `fgsm_rs`: FGSM from a random start (Wong, Rice & Kolter, ICLR 2020), 15
  epochs, peak learning rate 0.2. RobustBench `Wong2020Fast`: 83.34% clean,
  43.21% AutoAttack.
- `gradalign`: FGSM plus GradAlign, lambda 0.2 (Andriushchenko &
  Flammarion, NeurIPS 2020), 30 epochs, peak 0.3 at 2/5 of the run.
  RobustBench `Andriushchenko2020Understanding`: 79.84% / 43.93%.
- `trades`: TRADES, beta 6, 10 ascent steps of 2/255 (Zhang et al., ICML
  2019), 30 epochs on the FGSM-RS schedule. The paper's number
  (RobustBench `Zhang2019Theoretically`: 84.92% / 53.08%) is a
  WideResNet-34-10's, not this network's.

The model is then tested on the first `--standard-points` (1,000) test
images under the standard suite (APGD-CE, APGD-T, Square: AutoAttack's
attacks, each on the points the previous ones left) at linf 8/255, in
float32 whatever the training precision, and clean on every test image.
RobustBench's numbers are on all 10,000 test images and the original
CIFAR-10 arrays; results here are labelled "CIFAR-10 (JPEG copy)" when
read from the JPEG folder.

Training is checkpointed every epoch under `--output` and the same command
resumes it; `<output>/settings.json` refuses a resume with other settings.
The finished model (`model.keras`), its training record (`train.json`,
`history.csv`) and the results (`results.json`, `results.md`) stay there,
and a finished stage is never repeated.

Usage (on a GPU; each line one run):
    KERAS_BACKEND=jax python -m reproductions.cifar10_recipe --recipe fgsm_rs \\
        --mixed-precision mixed_float16 --output runs/cifar10-fgsm_rs
    KERAS_BACKEND=jax python -m reproductions.cifar10_recipe --recipe gradalign \\
        --mixed-precision mixed_float16 --output runs/cifar10-gradalign
    KERAS_BACKEND=jax python -m reproductions.cifar10_recipe --recipe trades \\
        --mixed-precision mixed_float16 --output runs/cifar10-trades
A CPU smoke run (a few steps on a slice, a narrow network, a weak suite):
    KERAS_BACKEND=jax python -m reproductions.cifar10_recipe --recipe fgsm_rs \\
        --width 4 --limit 256 --steps 2 --epochs 1 --standard-points 16 \\
        --apgd-steps 2 --square-queries 10 --output runs/cifar10-smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import keras

import keras_gradreg as kg
from keras_gradreg.recipes import CIFAR10_RECIPES, MIXED_PRECISION

from .run_records import cached, refuse_mismatched_resume, refuse_non_positive
from .standard_suite import add_standard_suite_arguments

EPS = 8 / 255
#: RobustBench's entries the recipes reproduce: (model id, clean %,
#: AutoAttack %), or None where no entry is this network's.
PUBLISHED = {
    "fgsm_rs": ("Wong2020Fast", 83.34, 43.21),
    "gradalign": ("Andriushchenko2020Understanding", 79.84, 43.93),
    "trades": None,
}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(CIFAR10_RECIPES), default="fgsm_rs")
    parser.add_argument("--output", default=None, help="default runs/cifar10-<recipe>")
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: the recipe's"
    )
    parser.add_argument("--width", type=int, default=64, help="first-stage filters")
    parser.add_argument(
        "--ema", type=float, default=None,
        help="momentum of an exponential moving average of the weights (e.g. 0.999)",
    )  # fmt: skip
    parser.add_argument(
        "--mixed-precision", choices=[p or "none" for p in MIXED_PRECISION],
        default="none",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on a slice")
    parser.add_argument("--steps", type=int, default=None, help="batches per epoch")
    parser.add_argument("--data-dir", default=None, help="holds cifar10-jpeg/")
    add_standard_suite_arguments(parser)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    refuse_non_positive(
        parser, args, "epochs", "width", "ema", "limit", "steps", "standard_points"
    )
    return parser, args


def recipe_of(args) -> kg.recipes.CIFAR10Recipe:
    changes = {"width": args.width, "ema_momentum": args.ema}
    if args.mixed_precision != "none":
        changes["mixed_precision"] = args.mixed_precision
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    return CIFAR10_RECIPES[args.recipe].replace(**changes)


def train(recipe, x, y, out: Path, args) -> dict:
    """Fits the recipe resumably and saves the model; its record."""
    print(f"\n== train {args.recipe}: {recipe}", flush=True)
    keras.utils.set_random_seed(args.seed)
    model, fit_arguments = recipe.prepare(x, y, steps=args.steps, seed=args.seed)
    timer = kg.callbacks.EpochTimer()
    fit_arguments["callbacks"] += [
        kg.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        timer,
    ]
    history = model.fit(**fit_arguments, verbose=args.verbose).history
    model.save(out / "model.keras")
    return {
        "epochs": recipe.epochs,
        "steps_per_epoch": len(fit_arguments["x"]),
        "train_examples": len(x),
        "seconds_per_epoch": timer.median,
        "last_epoch": {k: float(v[-1]) for k, v in history.items()} if history else {},
    }


def evaluate(recipe, model_path: Path, x_test, y_test, args) -> dict:
    """Clean accuracy on every test image, and robust accuracy after each
    attack of the standard suite on the first `--standard-points`, in
    float32."""
    trained = keras.saving.load_model(model_path, compile=False)
    model = recipe.build(float32=True)
    model.set_weights(trained.get_weights())
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clean = model.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)
    attacks = [
        kg.attacks.APGD(steps=args.apgd_steps),
        kg.attacks.APGD(steps=args.apgd_steps, targeted=True),
        kg.attacks.Square(queries=args.square_queries),
    ]
    n = args.standard_points
    start = time.perf_counter()
    report = kg.evaluate_robustness(
        model, x_test[:n], y_test[:n], ["linf"], {"linf": (EPS,)}, attacks,
        seed=args.seed, verbose=min(args.verbose, 1), cascade=True,
    )  # fmt: skip
    return {
        "clean_accuracy": clean["accuracy"],
        "test_examples": len(x_test),
        "points": len(x_test[:n]),
        "clean_accuracy_points": report.clean_accuracy,
        "after": {row["attack"]: row["accuracy"] for row in report.rows},
        "robust_accuracy": report.accuracy("linf", EPS),
        "apgd_steps": args.apgd_steps,
        "square_queries": args.square_queries,
        "evaluation_seconds": time.perf_counter() - start,
    }


def table(args, source, trained, results) -> str:
    published = PUBLISHED[args.recipe]
    target = (
        f"RobustBench `{published[0]}`: {published[1]:.2f}% clean, "
        f"{published[2]:.2f}% AutoAttack (all 10,000 test images)"
        if published
        else "no published number for this network"
    )
    after = ", ".join(f"{k} {100 * v:.2f}%" for k, v in results["after"].items())
    return "\n".join(
        [
            f"# CIFAR-10 recipe `{args.recipe}`, linf 8/255",
            "",
            f"Data: {source}. Backend: {keras.backend.backend()}. "
            f"{trained['epochs']} epochs of {trained['steps_per_epoch']} steps "
            f"on {trained['train_examples']} training images, "
            f"{trained['seconds_per_epoch']:.1f} s per epoch (median). "
            f"Target: {target}.",
            "",
            "| clean (all test images) | clean (attacked images) | "
            "robust (standard suite) | after each attack |",
            "|---:|---:|---:|---|",
            f"| {100 * results['clean_accuracy']:.2f}% "
            f"({results['test_examples']}) | "
            f"{100 * results['clean_accuracy_points']:.2f}% ({results['points']}) | "
            f"{100 * results['robust_accuracy']:.2f}% | {after} |",
            "",
            f"APGD-CE and APGD-T with {results['apgd_steps']} steps, Square with "
            f"{results['square_queries']} queries.",
            "",
        ]
    )


def main(argv=None) -> dict:
    """Trains and tests the recipe `argv` names; returns its results."""
    parser, args = parse(argv)
    try:
        recipe = recipe_of(args)
    except ValueError as error:  # e.g. --ema 1
        parser.error(str(error))
    out = Path(args.output or f"runs/cifar10-{args.recipe}")
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "recipe": dataclasses.asdict(recipe),
        "seed": args.seed,
        "limit": args.limit,
        "steps": args.steps,
        "standard": [args.standard_points, args.apgd_steps, args.square_queries],
        "backend": keras.backend.backend(),
    }
    refuse_mismatched_resume(parser, out, settings)
    (x, y), (x_test, y_test), source = kg.datasets.load_cifar10(
        args.data_dir, return_source=True
    )
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    trained = cached(out / "train.json", lambda: train(recipe, x, y, out, args))
    results = cached(
        out / "results.json",
        lambda: evaluate(recipe, out / "model.keras", x_test, y_test, args),
    )
    text = table(args, source, trained, results)
    (out / "results.md").write_text(text)
    print(text, flush=True)
    return {"train": trained, **results}


if __name__ == "__main__":
    main()
