"""The standard suite the reproductions attack their final models with:
AutoAttack's APGD-CE, APGD-T and Square, each on the points the previous
ones left, beside the older FGM + PGD-20 worst case on the same images."""

from __future__ import annotations

import keras

import keras_gradreg as kg

from .run_records import cached

PGD_STEPS = 20
#: The standard suite (APGD-CE, APGD-T, Square) at the main threat per norm.
STANDARD_EPS = {"linf": (0.1,), "l2": (1.0,)}
ATTACK_COLUMNS = ("APGD-CE", "APGD-T", "Square", "worst case")


def evaluate_standard(model_path, x_test, y_test, seed, args, threats=STANDARD_EPS):
    """Robust accuracy after each attack of the standard suite (APGD-CE and
    APGD-T with `args.apgd_steps`, Square with `args.square_queries`; each
    on the points the previous ones left) at linf 0.1 and l2 1, on 28 x 28
    views of the flat images, and the FGM + PGD-20 worst case on the same
    images. `threats` maps a norm to its one radius."""
    queries, steps = args.square_queries, args.apgd_steps
    model = keras.saving.load_model(model_path)
    old = kg.evaluate_robustness(
        model, x_test, y_test, list(threats), threats,
        ["fgm", kg.attacks.PGD(steps=PGD_STEPS)], seed=seed, verbose=0,
    )  # fmt: skip
    attacks = [
        kg.attacks.APGD(steps=steps), kg.attacks.APGD(steps=steps, targeted=True),
        kg.attacks.Square(queries=queries, image_shape=(28, 28)),
    ]  # fmt: skip
    report = kg.evaluate_robustness(
        model, x_test, y_test, list(threats), threats, attacks, seed=seed,
        verbose=min(args.verbose, 1), cascade=True,
    )  # fmt: skip
    return {
        "square_queries": queries,
        "apgd_steps": steps,
        "points": len(x_test),
        **{
            f"{norm} {eps:g}": {
                **{
                    "Square" if r["attack"].startswith("Square") else r["attack"]: r[
                        "accuracy"
                    ]
                    for r in report.rows
                    if r["norm"] == norm
                },
                "FGM + PGD-20": old.accuracy(norm, eps),
            }
            for norm, (eps,) in threats.items()
        },
    }


def cached_standard(path, model_path, x_test, y_test, seed, args, threats=STANDARD_EPS):
    """`evaluate_standard` on the first `args.standard_points` test images,
    recorded at `path` (JSON) and read back from there once it is (a
    finished run's suite is never attacked twice)."""
    points = args.standard_points
    return cached(
        path,
        lambda: evaluate_standard(
            model_path, x_test[:points], y_test[:points], seed, args, threats
        ),
    )


def add_standard_suite_arguments(parser):
    """`--square-queries`, `--apgd-steps` and `--standard-points`, for
    `evaluate_standard`."""
    parser.add_argument(
        "--square-queries", type=int, default=5000,
        help="queries of the standard suite's Square attack (AutoAttack: 5000)",
    )  # fmt: skip
    parser.add_argument(
        "--apgd-steps", type=int, default=100,
        help="steps of the standard suite's APGD-CE and APGD-T (AutoAttack: 100)",
    )  # fmt: skip
    parser.add_argument(
        "--standard-points", type=int, default=1000,
        help="test images (the first ones) the standard suite attacks",
    )  # fmt: skip


def standard_suite_lines(groups, cell, threats=STANDARD_EPS):
    """Markdown lines: per model and threat, the robust accuracy after each
    attack of the standard suite and how much FGM + PGD-20 on the same
    images overstated it. `groups` maps a model's label to the
    `evaluate_standard` results of its runs (one per seed)."""
    first = next(iter(groups.values()))[0]
    lines = [
        "",
        f"Robust accuracy on the first {first['points']} test images after each "
        "attack of the standard suite (APGD-CE and APGD-T with "
        f"{first.get('apgd_steps', 100)} steps, Square with "
        f"{first['square_queries']} queries; each on the points the previous "
        "ones left), against the old worst case (FGM + PGD-20) on the same "
        "images and how much that overstated it:",
        "",
        "| model | threat | APGD-CE | APGD-T | Square | FGM + PGD-20 | overstated by |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, runs in groups.items():
        for norm, (eps,) in threats.items():
            threat = f"{norm} {eps:g}"
            after = [[r[threat][a] for a in ATTACK_COLUMNS] for r in runs]
            old = [r[threat]["FGM + PGD-20"] for r in runs]
            gap = [o - a[-1] for o, a in zip(old, after)]
            cells = " | ".join(cell([a[i] for a in after]) for i in range(3))
            lines.append(
                f"| {label} | {threat} | {cells} | {cell(old)} | {cell(gap)} |"
            )
    return lines
