"""Search the family's norm type and strength on MNIST with KerasTuner.

Searches norm (linf, l2, l1) and sigma (log-uniform per norm) for the
permutation-invariant maxout MLP, scoring each trial on the validation split
(the last 10,000 training images) by the chosen objective (default: the mean
of clean and PGD-10 robust validation accuracy at linf eps 0.1). Prints a
leaderboard, retrains the best configuration on all 60,000 training images,
reports its clean and robust (PGD-20; with `--standard-suite` also
AutoAttack's APGD-CE, APGD-T and Square) test accuracy, and saves
`<output>/best_model.keras` and `<output>/summary.json`.

Re-running the same command resumes: finished trials are kept by KerasTuner
under `<output>/search/`, and the final training is checkpointed every
epoch. `--no-resume` starts over.

Usage:
    python examples/tune_mnist.py                       # defaults: < 15 min on 2 CPU cores
    python examples/tune_mnist.py --tuner bayesian --trials 20 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np

import keras_gradreg as kg
from keras_gradreg import tuning

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


def make_tuner(args, hypermodel):
    common = {
        "objective": tuning.objective(args.objective),
        "directory": str(Path(args.output)),
        "project_name": "search",
        "overwrite": not args.resume,
        "seed": args.seed,
    }
    if args.tuner == "hyperband":
        # Hyperband sizes its own brackets from max_epochs.
        return keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, **common)
    return TUNERS[args.tuner](hypermodel, max_trials=args.trials, **common)


def leaderboard(tuner, objective_name):
    rows = [tuning.describe_trial(t) for t in tuner.oracle.get_best_trials(10**6)]
    lines = [
        f"| trial | norm | sigma | form | {objective_name} | val accuracy | val robust accuracy |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['trial']} | {row['norm']} | {row['sigma']:.4g} | {row['form']} "
            f"| {row['score']:.4f} | {row.get('val_accuracy', float('nan')):.2%} "
            f"| {row.get('val_robust_accuracy', float('nan')):.2%} |"
        )
    return rows, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tuner", choices=tuple(TUNERS), default="random")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument(
        "--objective", choices=tuple(tuning.OBJECTIVES), default="val_robust_score"
    )
    parser.add_argument("--final-epochs", type=int, default=6)
    parser.add_argument(
        "--train-limit",
        type=int,
        default=20000,
        help="training images used by each trial (the search's cost)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="cap every split (smoke runs)"
    )
    parser.add_argument("--output", default="runs/tune_mnist")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted search in --output (default)",
    )
    parser.add_argument(
        "--standard-suite", action="store_true",
        help="also attack the final model with the standard suite (APGD-CE, "
        "APGD-T, Square) on the first --standard-points test images",
    )  # fmt: skip
    parser.add_argument("--standard-points", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    args = parser.parse_args(argv)
    for name in ("trials", "epochs", "final_epochs", "train_limit"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = kg.datasets.load_mnist(
        validation_size=10000
    )
    x_all = np.concatenate([x_train, x_val])
    y_all = np.concatenate([y_train, y_val])
    if args.limit:
        x_val, y_val, x_test, y_test, x_all, y_all = (
            a[: args.limit] for a in (x_val, y_val, x_test, y_test, x_all, y_all)
        )
    x_search, y_search = x_train[: args.train_limit], y_train[: args.train_limit]
    if args.limit:
        x_search, y_search = x_search[: args.limit], y_search[: args.limit]

    hypermodel = tuning.GradRegHyperModel(
        lambda hp: kg.models.mnist_maxout_mlp(),
        # The robust validation accuracy is logged for the leaderboard unless
        # the search is on the loss alone.
        robust_objective=args.objective != "val_loss",
        robust_subset=1000,
    )
    tuner = make_tuner(args, hypermodel)
    start = time.perf_counter()
    tuner.search(
        x_search,
        y_search,
        epochs=args.epochs,
        batch_size=128,
        validation_data=(x_val, y_val),
        verbose=args.verbose,
    )
    search_seconds = time.perf_counter() - start
    rows, table = leaderboard(tuner, args.objective)
    print("\nLeaderboard\n\n" + table)

    best_hp = tuner.get_best_hyperparameters(1)[0]
    model = hypermodel.build(best_hp)
    print(f"\nRetraining the best configuration: {model.regularizer}")
    backup = kg.callbacks.BackupAndRestore(
        str(out / "final_backup"), delete_checkpoint=True
    )
    model.fit(
        x_all,
        y_all,
        epochs=args.final_epochs,
        batch_size=128,
        verbose=args.verbose,
        callbacks=[backup],
    )
    model.save(out / "best_model.keras")
    report = kg.evaluate_robustness(
        model, x_test, y_test, ["linf"], [hypermodel.robust_eps],
        ["fgm", kg.attacks.PGD(steps=20)], seed=args.seed, verbose=args.verbose,
    )  # fmt: skip
    summary = {
        "tuner": args.tuner,
        "objective": args.objective,
        "backend": keras.backend.backend(),
        "search_seconds": search_seconds,
        "leaderboard": rows,
        "best_hyperparameters": best_hp.values,
        "regularizer": model.regularizer.get_config(),
        "test_accuracy": report.clean_accuracy,
        "test_robust_accuracy": report.accuracy("linf", hypermodel.robust_eps),
        "robustness": report.to_dict(),
        "settings": vars(args),
    }
    if args.standard_suite:
        n = args.standard_points
        standard = kg.evaluate_robustness(
            model, x_test[:n], y_test[:n], ["linf"], [hypermodel.robust_eps], "standard",
            seed=args.seed, verbose=args.verbose, image_shape=(28, 28),
        )  # fmt: skip
        old = kg.evaluate_robustness(
            model, x_test[:n], y_test[:n], ["linf"], [hypermodel.robust_eps],
            ["fgm", kg.attacks.PGD(steps=20)], seed=args.seed, verbose=0,
        )  # fmt: skip
        summary["standard"] = {
            "points": n,
            **{r["attack"]: r["accuracy"] for r in standard.rows},
            "FGM + PGD-20": old.accuracy("linf", hypermodel.robust_eps),
        }
        print(
            f"Standard suite (linf eps={hypermodel.robust_eps}): {summary['standard']}"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "leaderboard.md").write_text(table + "\n")
    print(
        f"\nBest: {model.regularizer.norm} sigma={model.regularizer.sigma:.4g}; "
        f"test accuracy {report.clean_accuracy:.2%}, robust accuracy "
        f"(PGD-20 and FGM, linf eps={hypermodel.robust_eps}) "
        f"{summary['test_robust_accuracy']:.2%} -> {out}"
    )
    return summary


if __name__ == "__main__":
    main()
