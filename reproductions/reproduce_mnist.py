"""Reproduce the paper's permutation-invariant MNIST comparison.

On the maxout MLP (2 x 240 units x 5 pieces, dropout, max-norm 1.9365):

  (a) maxout with dropout (sigma = 0);
  (b) FGSM adversarial training: norm linf, form perturb, alpha 0.5,
      sigma 0.25 (Goodfellow et al. 2015);
  (c) the family members linf, l2 and l1 in penalty form, each with sigma
      chosen on the validation split (last 10,000 training images),

then retrain each on all 60,000 training images and test. Every final model
is also attacked with PGD-20 (one random start; linf eps 0.1 and 0.2, l2 eps
1 and 2; a point counts as robust only if FGM and PGD both fail) and with
the standard suite (AutoAttack's APGD-CE, APGD-T and Square; linf 0.1 and
l2 1). Writes
`results.md` (test error, FGSM and PGD accuracy, time per epoch),
`results.json`, `robust_accuracy.png` (worst-case accuracy against eps) and
`gradients.png` (inputs, dL/dx and worst-case perturbations per model).
Every finished run is kept under `<output>/runs/` and the epochs of the run
in progress under `<output>/backup/`: re-running the same command resumes
where it stopped. The settings are recorded in `<output>/settings.json`, and
resuming a folder with other settings (budget, epochs, batch size, seed,
backend, ...) is refused rather than mixing their results.

Budgets:
    --budget quick   a few epochs per run (under 20 minutes on 2 CPU cores)
    --budget full    the paper's schedule: hundreds of epochs per run

`--members` trains and tabulates some of the five models only (plain, fgsm,
linf, l2, l1); processes given disjoint members can run side by side in one
`--output`, one per core, and a last run without it reads every finished
run back into the whole table.

Usage:
    KERAS_BACKEND=jax python -m reproductions.reproduce_mnist --budget quick \\
        --output runs/repro-quick
    # the full budget on two cores, then the whole table:
    python -m reproductions.reproduce_mnist --budget full \\
        --output runs/repro-full --members plain fgsm linf &
    python -m reproductions.reproduce_mnist --budget full \\
        --output runs/repro-full --members l2 l1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer

from .run_records import cached, refuse_mismatched_resume
from .standard_suite import (
    PGD_STEPS,
    add_standard_suite_arguments,
    cached_standard,
    standard_suite_lines,
)

BUDGETS = {
    # epochs for sigma selection, epochs for the final run, sigma grids.
    "quick": {
        "select_epochs": 4,
        "final_epochs": 8,
        "grids": {"linf": (0.03, 0.1), "l2": (0.5, 2.0), "l1": (2.0, 8.0)},
    },
    "full": {
        "select_epochs": 30,
        "final_epochs": 240,
        "grids": {
            "linf": (0.01, 0.03, 0.1),
            "l2": (0.1, 0.3, 1.0),
            "l1": (0.5, 2.0, 8.0),
        },
    },
}
#: PGD evaluation of every final model: radii per norm.
PGD_EPS = {"linf": (0.1, 0.2), "l2": (1.0, 2.0)}
PUBLISHED = [
    ("maxout + dropout (Goodfellow et al. 2013)", 0.94),
    ("FGSM adversarial training (Goodfellow et al. 2015)", 0.84),
]


#: Each model of the table by its command-line name, in the table's order.
MEMBERS = {
    "plain": "maxout + dropout",
    "fgsm": "FGSM adv. training (linf, perturb, alpha 0.5, sigma 0.25)",
    "linf": "linf penalty",
    "l2": "l2 penalty",
    "l1": "l1 penalty",
}


def train(regularizer, x, y, epochs, batch_size, seed, backup_dir, verbose=2):
    keras.utils.set_random_seed(seed)
    model = kg.models.mnist_maxout_mlp(**regularizer, input_range=(0.0, 1.0))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(
                1e-3, epochs * -(-len(x) // batch_size)
            )
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    # An interrupted run resumes from its last finished epoch.
    backup = kg.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=True)
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
        callbacks=[backup, timer],
    )  # fmt: skip
    return model, timer.median


def short_label(label):
    return label.split(" (")[0]


def pictures(out, reports, model_paths, x, y):
    """Robust accuracy against eps, and the gradient/perturbation grid."""
    curve = kg.plots.plot_robust_accuracy(
        {short_label(k): r for k, r in reports.items()}, out / "robust_accuracy.png"
    )
    models = {
        short_label(k): keras.saving.load_model(p) for k, p in model_paths.items()
    }
    grid = kg.plots.plot_input_gradients(
        models, x[:2], y[:2], out / "gradients.png",
        eps={"linf": 0.1, "l2": 1.0, "l1": 5.0},
    )  # fmt: skip
    return [curve, grid]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="quick")
    parser.add_argument("--output", default="runs/reproduce_mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fgsm-eps", type=float, default=0.1)
    parser.add_argument(
        "--select-epochs", type=int, default=None, help="override the budget's"
    )
    parser.add_argument(
        "--final-epochs", type=int, default=None, help="override the budget's"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="first N training/test images (smoke runs)",
    )
    parser.add_argument(
        "--members", nargs="+", choices=tuple(MEMBERS), default=list(MEMBERS),
        help="the models to train and tabulate (default: all); processes "
        "given disjoint members can share one --output side by side",
    )  # fmt: skip
    add_standard_suite_arguments(parser)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    budget = dict(BUDGETS[args.budget])
    for name in ("select_epochs", "final_epochs"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(
                    f"--{name.replace('_', '-')} must be >= 1. Received: {value}"
                )
            budget[name] = value
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "budget": args.budget,
        **budget,
        "batch_size": args.batch_size,
        "fgsm_eps": args.fgsm_eps,
        "seed": args.seed,
        "limit": args.limit,
        "backend": keras.backend.backend(),
    }
    refuse_mismatched_resume(parser, out, settings)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = kg.datasets.load_mnist(
        validation_size=10000
    )
    # The paper's split cuts the training set: together the parts are all of it.
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    if args.limit:
        x_train, y_train, x_val, y_val = (
            x_train[: args.limit],
            y_train[: args.limit],
            x_val[: args.limit],
            y_val[: args.limit],
        )
        x_all, y_all, x_test, y_test = (
            x_all[: args.limit],
            y_all[: args.limit],
            x_test[: args.limit],
            y_test[: args.limit],
        )

    by_member = {
        "plain": [{"sigma": 0.0}],
        "fgsm": [{"norm": "linf", "form": "perturb", "alpha": 0.5, "sigma": 0.25}],
        **{
            norm: [{"norm": norm, "form": "penalty", "sigma": s} for s in grid]
            for norm, grid in budget["grids"].items()
        },
    }
    candidates = {
        label: by_member[member]
        for member, label in MEMBERS.items()
        if member in args.members
    }

    def key(option):
        return "-".join(f"{k}={option[k]}" for k in sorted(option))

    def run(stage, option, x, y, epochs):
        print(f"\n== {stage}: {option}", flush=True)
        backup = out / "backup" / f"{stage}-{key(option)}"
        return train(
            option, x, y, epochs, args.batch_size, args.seed, backup, args.verbose
        )

    def select(option):
        model, _ = run("select", option, x_train, y_train, budget["select_epochs"])
        return {"val_accuracy": kg.classification_accuracy(model, x_val, y_val)}

    def final(label, option):
        model, per_epoch = run("final", option, x_all, y_all, budget["final_epochs"])
        model.save(model_path(option))
        clean = kg.classification_accuracy(model, x_test, y_test)
        fgsm = kg.fgsm_accuracy(model, x_test, y_test, eps=args.fgsm_eps)
        return {
            "model": label,
            "regularizer": model.regularizer.get_config(),
            "test_error": 1.0 - clean,
            "fgsm_accuracy": fgsm,
            "seconds_per_epoch": per_epoch,
        }

    def model_path(option):
        return out / "models" / f"{key(option)}.keras"

    def robustness(option):
        """PGD (and FGM) robust accuracy of a saved final model."""
        model = keras.saving.load_model(model_path(option))
        report = kg.evaluate_robustness(
            model, x_test, y_test, list(PGD_EPS), PGD_EPS,
            ["fgm", kg.attacks.PGD(steps=PGD_STEPS)], seed=args.seed,
            verbose=args.verbose,
        )  # fmt: skip
        return report.to_dict()

    (out / "models").mkdir(exist_ok=True)
    selection, rows, reports, paths = {}, [], {}, {}
    for label, options in candidates.items():
        chosen = options[0]
        if len(options) > 1:
            scores = [
                cached(out / "runs" / f"select-{key(o)}.json", lambda o=o: select(o))[
                    "val_accuracy"
                ]
                for o in options
            ]
            chosen = options[int(np.argmax(scores))]
            selection[label] = {
                "sigmas": [o["sigma"] for o in options],
                "val_accuracy": scores,
                "chosen": chosen["sigma"],
            }
        path = out / "runs" / f"final-{key(chosen)}.json"
        rows.append(cached(path, lambda name=label, c=chosen: final(name, c)))
        path = out / "runs" / f"robust-{key(chosen)}.json"
        reports[label] = kg.RobustnessReport(
            **cached(path, lambda c=chosen: robustness(c))
        )
        rows[-1]["pgd_accuracy"] = {
            f"{norm} {eps:g}": reports[label].accuracy(norm, eps)
            for norm, radii in PGD_EPS.items()
            for eps in radii
        }
        paths[label] = model_path(chosen)
        rows[-1]["standard"] = cached_standard(
            out / "runs" / f"standard-{key(chosen)}.json",
            model_path(chosen), x_test, y_test, args.seed, args,
        )  # fmt: skip
    figures = pictures(out, reports, paths, x_test, y_test)

    pgd_columns = [f"{n} {e:g}" for n, radii in PGD_EPS.items() for e in radii]
    lines = [
        f"Budget `{args.budget}`: {budget['select_epochs']} epochs per sigma candidate, "
        f"{budget['final_epochs']} epochs on all {len(x_all)} training images; backend "
        f"{keras.backend.backend()}; FGSM eps={args.fgsm_eps}.",
        "",
        f"Robust accuracy: PGD-{PGD_STEPS} (one random start) and FGM, worst case "
        "per point, on the 10,000 test images.",
        "",
        f"| model | sigma | test error | FGSM (linf {args.fgsm_eps:g}) | "
        + " | ".join(f"PGD {c}" for c in pgd_columns)
        + f" | standard suite linf 0.1 ({args.standard_points} images) | l2 1 | s/epoch |",
        "|---|---:|---:|---:|" + "---:|" * len(pgd_columns) + "---:|---:|---:|",
    ]
    for row in rows:
        pgd = " | ".join(f"{row['pgd_accuracy'][c]:.2%}" for c in pgd_columns)
        standard = " | ".join(
            f"{row['standard'][t]['worst case']:.2%}" for t in ("linf 0.1", "l2 1")
        )
        lines.append(
            f"| {row['model']} | {row['regularizer']['sigma']:g} | {row['test_error']:.2%} "
            f"| {row['fgsm_accuracy']:.2%} | {pgd} | {standard} | "
            f"{row['seconds_per_epoch']:.1f} |"
        )
    lines += standard_suite_lines(
        {r["model"]: [r["standard"]] for r in rows}, lambda values: f"{values[0]:.2%}"
    )
    lines += ["", *(f"![{p.stem}]({p.name})" for p in figures)]
    lines += [
        "",
        "Published reference test errors (permutation-invariant MNIST, no augmentation):",
        "",
    ]
    lines += [f"- {name}: {error:.2f}%" for name, error in PUBLISHED]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "budget": args.budget,
                "backend": keras.backend.backend(),
                "rows": rows,
                "selection": selection,
                "robustness": {k: r.to_dict() for k, r in reports.items()},
            },
            indent=2,
        )
    )
    print("\n" + "\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
