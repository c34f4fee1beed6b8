"""Robust-accuracy evaluation with gradient-masking sanity checks.

A point counts as robust at (norm, eps) only if it is classified correctly
both clean and under *every* attack: the "worst case" row of the report is
the accuracy against the per-example strongest attack. The sanity checks
follow AutoAttack's advice (Croce & Hein, 2020): a robust accuracy bought by
masked gradients shows up as a multi-step attack weaker than a one-step one,
accuracy that does not fall toward chance at a huge eps, many exactly-zero
input gradients, or accuracy rising with eps.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, check_input_range, check_integer
from keras_gradreg.src.evaluation import attacks as _attacks
from keras_gradreg.src.evaluation.attacks import eot
from keras_gradreg.src.evaluation.masking import masking_checks
from keras_gradreg.src.evaluation.noise import noise_accuracy
from keras_gradreg.src.evaluation.progress import SuiteProgress
from keras_gradreg.src.evaluation.report import WORST_CASE, RobustnessReport
from keras_gradreg.src.family.norms import canonical_norm

#: Default radii per norm for inputs in [0, 1] (MNIST-scale images).
DEFAULT_EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 2.0), "l1": (5.0, 10.0)}
#: The named attack suites: "standard" is AutoAttack's standard version
#: (APGD-CE, APGD-T, FAB-T, Square, as a cascade), the field's reported
#: number; "standard-no-fab" the same without FAB-T, quicker (FAB-T may
#: break points the APGDs left, though on the networks measured it broke
#: none); "fast" is FGM and PGD-20, quicker still and an upper bound on
#: robust accuracy; "rand" AutoAttack's version for models that are random
#: at inference (APGD-CE and APGD-DLR with expectation over 20 draws).
SUITES = ("standard", "standard-no-fab", "fast", "rand")
STANDARD_SUITE = (
    "standard suite (AutoAttack's standard version: APGD-CE, APGD-T, FAB-T, Square)"
)
STANDARD_SUITE_NO_FAB = (
    "standard suite without FAB-T (APGD-CE, APGD-T, Square; AutoAttack's "
    "standard version less FAB-T)"
)
RAND_SUITE = (
    "rand suite (AutoAttack's version for randomized models: APGD-CE and "
    "APGD-DLR, each gradient averaged over 20 draws of the model; accuracy "
    "the mean over 20 draws)"
)
#: Draws of a random model's predictions averaged per point by "rand", and
#: per gradient by its attacks (AutoAttack's `eot_iter`).
RAND_DRAWS = 20
#: The standard suite for l1 (AutoAttack's standard version for l1 runs
#: APGD-CE with 5 restarts and APGD-T with 5 target classes, both with the
#: 3 eps, 2 eps, eps schedule; its FAB-T and Square for l1 are not in the
#: library, so its l1 rows are these two attacks).
L1_STANDARD = "APGD-CE (5 restarts) and APGD-T (5 targets) for l1"


@keras_gradreg_export("keras_gradreg.GradientMaskingWarning")
class GradientMaskingWarning(UserWarning):
    """A robustness number that may come from masked gradients."""


def _eps_by_norm(norms, eps_values):
    norms = [canonical_norm(n) for n in norms]
    if eps_values is None:
        unknown = [n for n in norms if n not in DEFAULT_EPS]
        if unknown:
            raise ValueError(
                f"No default eps for norm(s) {unknown}: pass `eps_values`. "
                f"Received: eps_values=None"
            )
        return {n: DEFAULT_EPS[n] for n in norms}
    if isinstance(eps_values, dict):
        eps_values = {canonical_norm(k): v for k, v in eps_values.items()}
        missing = [n for n in norms if n not in eps_values]
        if missing:
            raise ValueError(
                f"Argument `eps_values` has no radii for norm(s) {missing}. "
                f"Received: eps_values={eps_values!r}"
            )
        return {n: tuple(eps_values[n]) for n in norms}
    return {n: tuple(eps_values) for n in norms}


@keras_gradreg_export("keras_gradreg.evaluate_robustness")
def evaluate_robustness(
    model,
    x,
    y,
    norms=("linf", "l2"),
    eps_values=None,
    attacks="standard",
    *,
    input_range=(0.0, 1.0),
    batch_size: int = 500,
    seed: int = 0,
    checks: bool = True,
    verbose: int = 1,
    image_shape: tuple[int, ...] | None = None,
    cascade: bool | None = None,
    noise_stds=(),
    noise_draws: int = 5,
) -> RobustnessReport:
    """Clean and robust accuracy of a classifier for every attack, norm and
    eps, with the worst case over attacks and gradient-masking checks.

    Args:
        model: a Keras classifier.
        x: inputs inside `input_range`.
        y: integer labels.
        norms: perturbation norms ("linf", "l2", "l1"; FGM also takes p).
        eps_values: radii: one sequence for every norm, a dict norm ->
            sequence, or None for `DEFAULT_EPS` (inputs in [0, 1]).
        attacks: "standard" (the default), AutoAttack's standard version:
            APGD-CE, APGD-T, FAB-T and Square (linf and l2) in that order,
            each on the points the previous ones left robust, so each
            attack's row is the robust accuracy after it and the worst case
            is the last (for l1, AutoAttack's standard version's APGD-CE
            with 5 restarts and APGD-T with 5 targets, both on the 3 eps,
            2 eps, eps schedule; the library has no l1 FAB-T or Square, which
            that version also runs); "standard-no-fab", the same without FAB-T, for
            speed (FAB-T costs 1.4-1.6 times APGD-T on the points the
            APGDs left; it may break some of them); "fast", FGM and
            PGD-20, quicker but an upper bound on robust accuracy (it
            overstates it, by tens of points for single-step-trained
            models); "rand", AutoAttack's version for models that are
            random at inference (layers drawing from Keras seed generators
            in `training=False` calls, such as a `Dropout` whose `call`
            forces `training=True`): APGD-CE then APGD-DLR, one restart,
            each step's gradient averaged over 20 draws of the model, and
            every accuracy the mean over 20 draws per point (a point is
            attacked while some draw still classifies it correctly); a
            deterministic model gets the numbers of APGD-CE and APGD-DLR
            without the draws, with a warning; or a list of "fgm", "pgd", "apgd-ce", "apgd-t",
            "fab-t", "square" and attack objects (`attacks.PGD(steps=40,
            restarts=5)`, ...), each run on every point.
        input_range: `(low, high)` of valid inputs.
        batch_size: examples per compiled call.
        seed: seed of the random starts.
        checks: run the gradient-masking checks (one extra PGD at a huge eps
            on at most 500 examples, one gradient pass on at most 1,000).
        verbose: 1 prints a line after each attack at each radius: the
            points it attacked, those still robust, its time, and the time
            left (see `SuiteProgress`).
        image_shape: how each Square attack without an `image_shape` of
            its own (`"square"`, the standard suites', or a `Square(...)`) views
            each example, e.g. `(28, 28)` for flattened MNIST (see
            `attacks.square`); default the example's own shape.
        cascade: run the attacks in order, each on the points the previous
            ones left robust, so each row is the robust accuracy after that
            attack (AutoAttack's way; cheaper, same worst case). Default:
            True for the standard suites, else False (every attack on every
            point, so each row is that attack alone).
        noise_stds: standard deviations of additive Gaussian noise to test
            under as well (the paper's Table IV), each with the noisy inputs
            clipped to `input_range` and not (`noise_accuracy`, seeded with
            `seed`); `attacks` may then be empty.
        noise_draws: noise draws averaged per std, >= 1.

    Returns:
        A `RobustnessReport`; `print(report)` shows the Markdown table.

    Raises:
        ValueError: for an unknown attack or norm, or missing radii.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")
        >>> report = evaluate_robustness(model, x, np.zeros(32, "int32"), ["linf"],
        ...                              [0.05], "fast", checks=False, verbose=0)
        >>> report.accuracy("linf", 0.05) <= report.clean_accuracy
        True
        >>> report.suite
        'attacks FGM, PGD-20 (each an upper bound on robust accuracy)'
    """
    suite_name = attacks if isinstance(attacks, str) and attacks in SUITES else ""
    if suite_name == "fast":
        attacks = ("fgm", "pgd")
    standard = suite_name.startswith("standard")
    if cascade is None:
        cascade = standard or suite_name == "rand"
    if not isinstance(cascade, bool):
        raise ValueError(
            f"Argument `cascade` must be True, False or None. Received: cascade={cascade!r}"
        )
    rand = suite_name == "rand"
    if standard or rand:
        attack_objects = _suite_attacks(suite_name, "linf", 10)
    else:
        attacks = [attacks] if isinstance(attacks, str) else attacks
        attack_objects = [_attacks.get(a) for a in attacks]
    attack_objects = _with_view(attack_objects, image_shape)
    noise_stds = _check_noise_stds(noise_stds)
    check_integer("noise_draws", noise_draws)
    if not attack_objects and not noise_stds:
        raise ValueError(
            "Argument `attacks` must name at least one attack (or give "
            "`noise_stds`). Received: ()"
        )
    radii = _eps_by_norm(norms, eps_values)
    input_range = check_input_range(input_range)
    x, y = check_data(x, y, None)
    if len(x) == 0:
        raise ValueError("Argument `x` must hold at least one example. Received: 0")
    classes = _attacks.num_classes(model, x[:1]) if standard else None
    by_norm = {
        n: _with_view(_suite_attacks(suite_name, n, classes), image_shape)
        if standard or rand
        else attack_objects
        for n in radii
    }
    if standard and classes < 4:  # the targeted DLR loss needs four classes
        by_norm = {
            n: [a for a in v if not getattr(a, "targeted", False)]
            for n, v in by_norm.items()
        }
        warnings.warn(
            f"The standard suite skips APGD-T for a model with {classes} "
            "classes (its targeted DLR loss needs at least 4); it runs "
            "APGD-CE and Square.",
            stacklevel=2,
        )
    if rand and not eot.seed_states(model):
        warnings.warn(
            "The rand suite attacks a model that draws no random numbers from "
            "Keras seed generators at inference: it is deterministic to Keras, "
            "and the suite equals APGD-CE and APGD-DLR without expectation "
            "over transformation.",
            stacklevel=2,
        )
    if rand:

        def score(xs, ys):
            return eot.accuracy_over_draws(model, xs, ys, RAND_DRAWS, seed, batch_size)
    else:

        def score(xs, ys):
            return _attacks.correct_predictions(model, xs, ys, batch_size) * 1.0

    correct = score(x, y)
    points = [
        (n, e, a) for n, values in radii.items() for e in values for a in by_norm[n]
    ]
    progress = SuiteProgress(points, correct, 2 * len(noise_stds)) if verbose else None
    rows, survived = [], {}
    for norm, eps, attack in points:
        # The cascade attacks only what is still robust (in some draw, for
        # "rand"); single attacks all. A point scores the fraction of draws
        # (0 or 1 but for "rand") it stays correct under every attack so far.
        base = survived.get((norm, eps), correct) if cascade else correct
        todo = base > 0 if cascade else np.ones(len(x), bool)
        robust = base.copy()
        if progress:
            progress.start(norm, eps, attack.name, int(todo.sum()))
        start = time.perf_counter()
        if todo.any():
            x_adv = attack(
                model, x[todo], y[todo], norm, eps, input_range=input_range,
                batch_size=batch_size, seed=seed,
            )  # fmt: skip
            robust[todo] = np.minimum(base[todo], score(x_adv, y[todo]))
        rows.append(
            {
                "attack": attack.name,
                "norm": norm,
                "eps": eps,
                "accuracy": float(robust.mean()),
                "attacked": int(todo.sum()),
                "seconds": time.perf_counter() - start,
            }
        )
        survived[(norm, eps)] = np.minimum(survived.get((norm, eps), correct), robust)
        if progress:
            progress.done(survived[(norm, eps)])
    for (norm, eps), robust in survived.items():
        rows.append(
            {
                "attack": WORST_CASE,
                "norm": norm,
                "eps": eps,
                "accuracy": float(robust.mean()),
            }
        )
    noise = []
    for std in noise_stds:
        for clip in (input_range, None):
            result = noise_accuracy(
                model, x, y, std, draws=noise_draws, clip=clip, seed=seed,
                batch_size=batch_size,
            )  # fmt: skip
            noise.append(
                {"std": result.std, "clip": clip, "accuracy": result.mean,
                 "spread": result.spread, "draws": result.draws}
            )  # fmt: skip
            if progress:
                progress.noise(std, clip is not None, result.mean)
    if standard:
        suite = STANDARD_SUITE if suite_name == "standard" else STANDARD_SUITE_NO_FAB
        suite += f"; {L1_STANDARD}" if "l1" in radii else ""
    elif rand:
        suite = RAND_SUITE
    else:
        suite = (
            f"attacks {', '.join(a.name for a in attack_objects)} "
            "(each an upper bound on robust accuracy)"
        )
    from keras_gradreg import __version__

    report = RobustnessReport(
        float(correct.mean()), rows, [], int(len(x)), noise, suite=suite,
        suite_name=suite_name, input_range=input_range, version=__version__,
    )  # fmt: skip
    if checks and attack_objects:
        unique = {a.name: a for v in by_norm.values() for a in v}
        report.warnings = masking_checks(
            model, x, y, report, list(unique.values()), input_range, batch_size, seed
        )
        for message in report.warnings:
            warnings.warn(message, GradientMaskingWarning, stacklevel=2)
    return report


def _with_view(attacks, image_shape):
    """`attacks`, each Square without a view of its own given `image_shape`."""
    if image_shape is None:
        return attacks
    return [
        dataclasses.replace(a, image_shape=image_shape)
        if isinstance(a, _attacks.Square) and a.image_shape is None
        else a
        for a in attacks
    ]


def _suite_attacks(suite_name, norm, classes):
    """The attacks of a named suite at `norm`, in their cascade's order."""
    if suite_name == "rand":
        return [
            _attacks.APGD(eot_samples=RAND_DRAWS),
            _attacks.APGD(loss="dlr", eot_samples=RAND_DRAWS),
        ]
    if norm == "l1":
        targets = min(5, classes - 1)
        return [
            _attacks.APGD(restarts=5),
            _attacks.APGD(targeted=True, target_classes=max(targets, 1)),
        ]
    fab = [_attacks.FAB()] if suite_name == "standard" else []
    return [_attacks.APGD(), _attacks.APGD(targeted=True), *fab, _attacks.Square()]


def _check_noise_stds(noise_stds) -> tuple:
    values = (noise_stds,) if isinstance(noise_stds, (int, float)) else noise_stds
    try:
        values = tuple(values)
        valid = all(
            not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
        )
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(
            "Argument `noise_stds` must be finite numbers >= 0. Received: "
            f"noise_stds={noise_stds!r}"
        )
    return tuple(float(v) for v in values)
