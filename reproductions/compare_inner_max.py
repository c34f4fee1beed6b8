"""How close does the first-order family get to k-step training, at what cost?

On the maxout MLP (the reproduction's network and Adam + cosine schedule),
at one linf radius sigma (default 0.1), trains:

  - maxout + dropout (sigma = 0);
  - the linf penalty (exact first order: L + sigma ||dL/dx||_1);
  - FGSM training (perturb form, one step, alpha 0.5);
  - multistep training with k = 7 and k = 20 steps (alpha 0.5, random
    start, step 2.5 sigma / k; alpha = 0 would be Madry et al.'s PGD
    training), the same sigma,

and reports clean test error, the FGM + PGD-20 worst case on the whole test
set and the standard suite (APGD-CE, APGD-T, Square) on the first
`--standard-points` test images, all at linf `sigma`, and the median wall
time per epoch. Finished runs are kept under `<output>/runs/`, the epochs of
the run in progress under `<output>/backup/`; re-running resumes, and
`<output>/settings.json` refuses a resume with other settings.

Usage:
    KERAS_BACKEND=jax python -m reproductions.compare_inner_max --epochs 10 --output runs/inner-max
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg

from .reproduce_mnist import train
from .run_records import cached, refuse_mismatched_resume, refuse_non_positive
from .standard_suite import (
    PGD_STEPS,
    add_standard_suite_arguments,
    cached_standard,
    standard_suite_lines,
)


def members(sigma, steps=(7, 20)):
    """Label -> regularizer, in the table's order."""
    linf = {"norm": "linf", "sigma": sigma}
    return {
        "maxout + dropout": {"sigma": 0.0},
        "linf penalty": {**linf, "form": "penalty"},
        "FGSM training (perturb, alpha 0.5)": {**linf, "form": "perturb", "alpha": 0.5},
        **{
            f"multistep k={k} (alpha 0.5)": {
                **linf,
                "form": "multistep",
                "alpha": 0.5,
                "steps": k,
            }
            for k in steps
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sigma", type=float, default=0.1, help="linf radius")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, nargs="+", default=[7, 20])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="smoke runs")
    parser.add_argument("--output", default="runs/inner-max")
    add_standard_suite_arguments(parser)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    refuse_non_positive(
        parser, args, "sigma", "epochs", "batch_size", "limit", "standard_points"
    )
    if any(k < 1 for k in args.steps):
        parser.error(f"--steps must be >= 1. Received: {args.steps}")
    out = Path(args.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    settings = {
        "sigma": args.sigma,
        "epochs": args.epochs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "limit": args.limit,
        "backend": keras.backend.backend(),
    }
    refuse_mismatched_resume(parser, out, settings)
    (x_train, y_train), (x_test, y_test) = kg.datasets.load_mnist()
    x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    threats = {"linf": (args.sigma,)}

    rows = {}
    for label, regularizer in members(args.sigma, args.steps).items():
        key = "-".join(f"{k}={regularizer[k]}" for k in sorted(regularizer))
        model_path = out / "runs" / f"{key}.keras"

        def final(regularizer=regularizer, key=key, model_path=model_path):
            print(f"\n== {regularizer}", flush=True)
            model, seconds = train(
                regularizer, x_train, y_train, args.epochs, args.batch_size,
                args.seed, out / "backup" / key, args.verbose,
            )  # fmt: skip
            model.save(model_path)
            report = kg.evaluate_robustness(
                model, x_test, y_test, ["linf"], threats,
                ["fgm", kg.attacks.PGD(steps=PGD_STEPS)], seed=args.seed, verbose=0,
            )  # fmt: skip
            return {
                "regularizer": regularizer,
                "test_error": 1.0 - kg.classification_accuracy(model, x_test, y_test),
                "fgm_pgd": report.accuracy("linf", args.sigma),
                "seconds_per_epoch": seconds,
            }

        row = cached(out / "runs" / f"{key}.json", final)
        row["standard"] = cached_standard(
            out / "runs" / f"{key}-standard.json",
            model_path, x_test, y_test, args.seed, args, threats,
        )  # fmt: skip
        rows[label] = row
    lines = table(rows, args)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return rows


def table(rows, args):
    plain = rows["maxout + dropout"]["seconds_per_epoch"]
    threat = f"linf {args.sigma:g}"
    lines = [
        f"Maxout MLP, {args.epochs} epochs (Adam + cosine), seed {args.seed}, "
        f"backend {keras.backend.backend()}; robust accuracy at {threat}:",
        "",
        "| model | test error | FGM + PGD-20 | standard suite | s/epoch | x plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in rows.items():
        suite = row["standard"][threat]["worst case"]
        lines.append(
            f"| {label} | {row['test_error']:.2%} | {row['fgm_pgd']:.1%} | "
            f"{suite:.1%} | {row['seconds_per_epoch']:.1f} | "
            f"{row['seconds_per_epoch'] / plain:.2f} |"
        )
    lines += standard_suite_lines(
        {label: [row["standard"]] for label, row in rows.items()},
        lambda values: f"{np.mean(values):.1%}",
        threats={"linf": (args.sigma,)},
    )
    return lines


if __name__ == "__main__":
    main()
