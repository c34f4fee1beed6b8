"""l1-APGD (Croce & Hein, 2021, "Mind the box: l1-APGD for sparse adversarial
attacks on image classifiers"): APGD's schedule with a sparse step, the
exact projection onto the l1 ball inside the input box, and its own
step-size and sparsity adaptation, as in the reference code."""

from __future__ import annotations

import math

from keras import ops

from keras_gradreg.src.family.l1_geometry import project_l1_box, sparse_direction

_FIRST_FRACTION = 0.2  # coordinates moved by a fresh run's first steps
_SPARSITY_DROP = 0.95  # a check whose sparsity fell below this ratio resets
_STEP_DECAY = 1.5  # the step's decay at a check that did not reset
_MIN_STEP = 10.0  # the step never falls below eps / this


def l1_stages(eps, steps, schedule):
    """The `(radius, iterations)` of each stage of one l1-APGD run. With
    `schedule`, AutoAttack's standard version for l1 (`use_largereps`):
    `3 eps`, `2 eps` and `eps` for 30%, 30% (rounded up) and the rest of
    the iterations, each stage starting at the previous one's best point
    projected onto its ball; else one stage at `eps`.

    Examples:
        >>> l1_stages(12.0, 100, True)
        [(36.0, 30), (24.0, 30), (12.0, 40)]
    """
    if not schedule:
        return [(eps, steps)]
    first = math.ceil(0.3 * steps)
    return [(3.0 * eps, first), (2.0 * eps, first), (eps, steps - 2 * first)]


def _l0(delta):
    return ops.sum(ops.cast(delta != 0, "float32"), axis=-1)


def build_apgd_l1(evaluate, steps, input_range):
    """One l1-APGD stage on one batch as a function of arrays
    `(x, y, y_target, x_start, eps, fresh, salt) -> (x_adv, fooled,
    best_loss, best)` on flat inputs; `evaluate(x, y, y_target, salt,
    step)` gives the loss, misclassification and gradient at `x` (`step`
    numbers the evaluation, for the draws of a random model).

    The stage projects `x_start` onto its ball and box, then takes `steps`
    sparse steps `x <- P(x + eta sparse_direction(g, k))` (no momentum, as
    in the reference). Every `max(int(0.04 steps), 1)` steps, with `s` the
    number of non-zero coordinates of the best point's perturbation: the
    fraction `k` becomes `s / (1.5 d)`; an example whose `s` fell below 95%
    of its value at the last check returns to its best point with `eta =
    eps`, the others' `eta` shrinks by 1.5, within `[eps / 10, eps]`. A
    `fresh` start moves `k = 20%` of the coordinates until the first check;
    a continued one `s / (1.5 d)` of its start.
    """
    window = max(int(0.04 * steps), 1)

    def attack(x, y, y_target, x_start, eps, fresh, salt):
        eps = ops.cast(eps, x.dtype)
        rows = lambda v: ops.expand_dims(v, -1)  # noqa: E731
        size_of = float(ops.shape(x)[-1])
        start = x + project_l1_box(x, x_start - x, eps, input_range)
        value, wrong, gradient = evaluate(start, y, y_target, salt, 0)
        sparsity = _l0(start - x)
        fraction = ops.where(fresh > 0, _FIRST_FRACTION, sparsity / size_of / 1.5)
        last_sparsity = ops.where(fresh > 0, size_of, sparsity)
        batch = ops.shape(x)[0]
        state = (
            start,  # the current iterate
            gradient,
            ops.ones((batch,), x.dtype) * eps,  # step sizes
            start,  # highest-loss point
            gradient,  # its gradient
            value,  # its loss
            ops.where(rows(wrong), start, x),  # latest misclassified point
            wrong,  # misclassified at some iterate
            ops.cast(fraction, "float32"),
            ops.cast(last_sparsity, "float32"),
        )

        def step(i, state):
            (current, gradient, size, best, best_gradient, best_value,
             best_wrong, fooled, fraction, last_sparsity) = state  # fmt: skip
            moved = current + rows(size) * sparse_direction(gradient, fraction)
            current = x + project_l1_box(x, moved - x, eps, input_range)
            value, wrong, gradient = evaluate(current, y, y_target, salt, i + 1)
            best_wrong = ops.where(rows(wrong), current, best_wrong)
            fooled = ops.logical_or(fooled, wrong)
            better = value > best_value
            best = ops.where(rows(better), current, best)
            best_gradient = ops.where(rows(better), gradient, best_gradient)
            best_value = ops.where(better, value, best_value)

            checking = ops.mod(i + 1, window) == 0
            sparsity = _l0(best - x)
            reset = ops.logical_and(checking, sparsity < _SPARSITY_DROP * last_sparsity)
            decayed = ops.where(reset, eps, size / _STEP_DECAY)
            decayed = ops.clip(decayed, eps / _MIN_STEP, eps)
            size = ops.where(checking, decayed, size)
            fraction = ops.where(checking, sparsity / size_of / 1.5, fraction)
            last_sparsity = ops.where(checking, sparsity, last_sparsity)
            current = ops.where(rows(reset), best, current)
            gradient = ops.where(rows(reset), best_gradient, gradient)
            return (current, gradient, size, best, best_gradient, best_value,
                    best_wrong, fooled, fraction, last_sparsity)  # fmt: skip

        state = ops.fori_loop(0, steps, step, state)
        best, best_value, best_wrong, fooled = state[3], state[5], state[6], state[7]
        return ops.where(rows(fooled), best_wrong, best), fooled, best_value, best

    return attack
