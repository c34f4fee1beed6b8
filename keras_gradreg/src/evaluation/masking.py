"""Gradient-masking sanity checks on a robustness evaluation.

A robust accuracy bought by masked gradients rather than robustness shows
(Croce & Hein, 2020, AutoAttack's advice) as a multi-step attack weaker than
a one-step one, the gradient-free Square attack breaking points that APGD
could not, accuracy rising with eps, many exactly-zero input gradients, or
accuracy well above chance at an eps that reaches every valid input.
`evaluate_robustness` runs these checks and issues the failures as
`GradientMaskingWarning`.
"""

from __future__ import annotations

import math

import numpy as np

from keras_gradreg.src.evaluation import attacks as _attacks


def _huge_eps(norm, dimension, input_range):
    """A radius that reaches every valid input (or far beyond, unbounded)."""
    width = 10.0 if input_range is None else input_range[1] - input_range[0]
    return {"linf": width, "l2": width * math.sqrt(dimension), "l1": width * dimension}[
        norm
    ]


def masking_checks(model, x, y, report, attacks, input_range, batch_size, seed):
    """Runs the checks on `report` (what `attacks` measured on `x`, `y`).

    Returns:
        The messages of the checks that fail (none: no sign of masking).
    """
    messages = []
    tolerance = max(0.01, 2.0 / len(x))
    by_attack = {}
    for row in report.rows:
        by_attack.setdefault((row["attack"], row["norm"]), []).append(
            (row["eps"], row["accuracy"])
        )
    # 1. A multi-step attack weaker than the one-step one.
    one_step = [a.name for a in attacks if isinstance(a, _attacks.FGM)]
    multi_step = [a.name for a in attacks if isinstance(a, _attacks.PGD)]
    for fgm_name in one_step:
        for pgd_name in multi_step:
            for row in report.rows:
                if row["attack"] != pgd_name:
                    continue
                weak = report.accuracy(row["norm"], row["eps"], fgm_name)
                if row["accuracy"] > weak + tolerance:
                    messages.append(
                        f"{pgd_name} is weaker than {fgm_name} at {row['norm']} "
                        f"eps={row['eps']:g} ({row['accuracy']:.2%} vs {weak:.2%} "
                        "robust accuracy): the loss surface may be masking gradients."
                    )
    # 1b. The gradient-free Square breaking points the gradient attacks
    # before it (APGD-T, FAB-T) could not.
    names = [a.name for a in attacks]
    before_square = [n for n in ("FAB-T", "APGD-T") if n in names]
    if "Square" in names and before_square:
        for row in report.rows:
            if row["attack"] != "Square":
                continue
            before = report.accuracy(row["norm"], row["eps"], before_square[0])
            if row["accuracy"] < before - tolerance:
                messages.append(
                    f"The gradient-free Square attack broke points that the "
                    f"gradient attacks could not at {row['norm']} eps={row['eps']:g} "
                    f"({before:.2%} after {before_square[0]} -> "
                    f"{row['accuracy']:.2%}): gradients may be masked."
                )
    # 2. Accuracy rising with eps.
    for (name, norm), curve in by_attack.items():
        curve.sort()
        for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
            if a1 > a0 + tolerance:
                messages.append(
                    f"{name} accuracy rises with eps for {norm}: {a0:.2%} at "
                    f"eps={e0:g} but {a1:.2%} at eps={e1:g}."
                )
    # 3. Exactly-zero input gradients.
    subset = slice(0, min(len(x), 1000))
    gradients = _attacks.input_gradients(
        model, x[subset], y[subset], input_range=input_range, batch_size=batch_size
    )
    zero = np.all(gradients.reshape(len(gradients), -1) == 0, axis=1).mean()
    if zero > 0.05:
        messages.append(
            f"{zero:.1%} of the examples have an exactly-zero input gradient: "
            "gradient-based attacks cannot move them (masking, e.g. saturated "
            "outputs or non-differentiable layers)."
        )
    # 4. Accuracy at an eps that reaches every valid input.
    subset = slice(0, min(len(x), 500))
    classes = int(np.shape(model.predict(x[:1], verbose=0))[-1])
    chance = 1.0 / classes
    dimension = int(np.prod(x.shape[1:]))
    pgd = next((a for a in attacks if isinstance(a, _attacks.PGD)), _attacks.PGD())
    for norm in dict.fromkeys(row["norm"] for row in report.rows):
        if norm not in ("linf", "l2", "l1"):
            continue
        eps = _huge_eps(norm, dimension, input_range)
        x_adv = pgd(
            model, x[subset], y[subset], norm, eps,
            input_range=input_range, batch_size=batch_size, seed=seed,
        )  # fmt: skip
        accuracy = float(
            _attacks.correct_predictions(model, x_adv, y[subset], batch_size).mean()
        )
        if accuracy > max(2 * chance, 0.1):
            messages.append(
                f"{pgd.name} at {norm} eps={eps:g}, which reaches every valid "
                f"input, leaves {accuracy:.2%} accuracy (chance is {chance:.0%}): "
                "the attack is not working on this model."
            )
    return messages
