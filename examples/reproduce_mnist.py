"""Reproduce the paper's permutation-invariant MNIST comparison.

On the maxout MLP (2 x 240 units x 5 pieces, dropout, max-norm 1.9365):

  (a) maxout with dropout (sigma = 0);
  (b) FGSM adversarial training: norm linf, form perturb, alpha 0.5,
      sigma 0.25 (Goodfellow et al. 2015);
  (c) the family members linf, l2 and l1 in penalty form, each with sigma
      chosen on the validation split (last 10,000 training images),

then retrain each on all 60,000 training images and test. Writes
`results.md` (test error, FGSM accuracy, time per epoch) and `results.json`.
Every finished run is kept under `<output>/runs/` and the epochs of the run
in progress under `<output>/backup/`: re-running the same command resumes
where it stopped.

Budgets:
    --budget quick   a few epochs per run (under 20 minutes on 2 CPU cores)
    --budget full    the paper's schedule: hundreds of epochs per run

Usage:
    KERAS_BACKEND=jax python examples/reproduce_mnist.py --budget quick --output runs/repro-quick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer

BUDGETS = {
    # epochs for sigma selection, epochs for the final run, sigma grids.
    "quick": {
        "select_epochs": 4,
        "final_epochs": 8,
        "grids": {"linf": (0.03, 0.1), "l2": (0.5, 2.0), "l1": (2.0, 8.0)},
    },
    "full": {
        "select_epochs": 100,
        "final_epochs": 300,
        "grids": {
            "linf": (0.01, 0.03, 0.1, 0.3),
            "l2": (0.25, 0.5, 1.0, 2.0, 4.0),
            "l1": (1.0, 2.0, 4.0, 8.0, 16.0),
        },
    },
}
PUBLISHED = [
    ("maxout + dropout (Goodfellow et al. 2013)", 0.94),
    ("FGSM adversarial training (Goodfellow et al. 2015)", 0.84),
]


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
    backup = keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=True)
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
        callbacks=[backup, timer],
    )  # fmt: skip
    return model, timer.median


def cached(path: Path, compute):
    """Returns the JSON stored at `path`, or computes, stores and returns it:
    finished runs are never repeated when the script is restarted."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return value


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

    candidates = {
        "maxout + dropout": [{"sigma": 0.0}],
        "FGSM adv. training (linf, perturb, alpha 0.5, sigma 0.25)": [
            {"norm": "linf", "form": "perturb", "alpha": 0.5, "sigma": 0.25}
        ],
        **{
            f"{norm} penalty": [
                {"norm": norm, "form": "penalty", "sigma": s} for s in grid
            ]
            for norm, grid in budget["grids"].items()
        },
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
        model.save(out / "models" / f"{key(option)}.keras")
        clean = kg.classification_accuracy(model, x_test, y_test)
        fgsm = kg.fgsm_accuracy(model, x_test, y_test, eps=args.fgsm_eps)
        return {
            "model": label,
            "regularizer": model.regularizer.get_config(),
            "test_error": 1.0 - clean,
            "fgsm_accuracy": fgsm,
            "seconds_per_epoch": per_epoch,
        }

    (out / "models").mkdir(exist_ok=True)
    selection, rows = {}, []
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

    lines = [
        f"Budget `{args.budget}`: {budget['select_epochs']} epochs per sigma candidate, "
        f"{budget['final_epochs']} epochs on all {len(x_all)} training images; backend "
        f"{keras.backend.backend()}; FGSM eps={args.fgsm_eps}.",
        "",
        f"| model | sigma | test error | FGSM accuracy (linf eps={args.fgsm_eps}) | s/epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['regularizer']['sigma']:g} | {row['test_error']:.2%} "
            f"| {row['fgsm_accuracy']:.2%} | {row['seconds_per_epoch']:.1f} |"
        )
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
            },
            indent=2,
        )
    )
    print("\n" + "\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
