"""APGD's iteration in linf and l2 (Croce & Hein, 2020): the momentum step,
the projection onto the ball and the range, and the step-size schedule,
as one compiled loop."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_gradreg.src.family.norms import per_example_norm

_RHO = 0.75  # the fraction of improving steps below which the step halves
_MOMENTUM = 0.75


def checkpoints(steps: int) -> tuple[list[int], list[int]]:
    """The iterations at which APGD checks its step size, and the window
    length `k` used at each (Croce & Hein's schedule, as in their code).

    The first window is `max(int(0.22 * steps), 1)` iterations; each later
    one is `size_decr = max(int(0.03 * steps), 1)` shorter, but never below
    `max(int(0.06 * steps), 1)`.

    Examples:
        >>> checkpoints(100)[0][:4]
        [21, 40, 56, 69]
    """
    k = max(int(0.22 * steps), 1)
    minimum, decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    at, windows, i = [], [], k - 1
    while i < steps:
        at.append(i)
        windows.append(k)
        k = max(k - decrease, minimum)
        i += k
    return at, windows


def _build_apgd(evaluate, norm, steps, input_range):
    """APGD on one batch as one function of arrays:
    `(x, y, y_target, x_start, eps, salt) -> (x_adv, success, best_loss)`
    on flat inputs. Success is misclassification (`argmax != y`), also for
    the targeted loss, as in AutoAttack."""
    at, windows = checkpoints(steps)
    is_check = np.zeros(steps, "int32")
    window = np.ones(steps, "int32")
    is_check[at], window[at] = 1, windows
    longest = max(windows) if windows else 1

    def constrain(x, point, eps):
        """Projects `point` onto the eps-ball around `x` and into range."""
        delta = point - x
        if norm == "linf":
            delta = ops.clip(delta, -eps, eps)
        else:
            length = ops.expand_dims(per_example_norm(delta, 2.0), -1)
            delta = delta * ops.minimum(1.0, eps / ops.maximum(length, 1e-12))
        point = x + delta
        return point if input_range is None else ops.clip(point, *input_range)

    def direction(gradient):
        if norm == "linf":
            return ops.sign(gradient)
        length = ops.expand_dims(per_example_norm(gradient, 2.0), -1)
        return gradient / (length + 1e-12)

    def attack(x, y, y_target, x_start, eps, salt):
        eps = ops.cast(eps, x.dtype)
        rows = lambda v: ops.expand_dims(v, -1)  # noqa: E731
        value, wrong, gradient = evaluate(x_start, y, y_target, salt, 0)
        batch = ops.shape(x)[0]
        state = (
            x_start,  # the current iterate
            x_start,  # the previous one
            gradient,
            ops.ones((batch,), x.dtype) * 2.0 * eps,  # step sizes
            x_start,  # highest-loss point
            gradient,  # its gradient
            value,  # its loss
            ops.where(rows(wrong), x_start, x),  # latest misclassified point
            wrong,  # misclassified at some iterate
            ops.zeros((steps, batch), "float32"),  # losses per iteration
            value,  # best loss at the last check
            ops.ones((batch,), "float32"),  # step halved at the last check
        )
        check_flags = ops.convert_to_tensor(is_check)
        check_windows = ops.convert_to_tensor(window)

        def step(i, state):
            (current, previous, gradient, size, best, best_gradient, best_value,
             best_wrong, fooled, history, last_best, last_reduced) = state  # fmt: skip
            momentum = ops.where(i > 0, _MOMENTUM, 1.0)
            momentum = ops.cast(momentum, x.dtype)
            z = constrain(x, current + rows(size) * direction(gradient), eps)
            moved = (
                current
                + (z - current) * momentum
                + (current - previous) * (1.0 - momentum)
            )
            previous, current = current, constrain(x, moved, eps)
            value, wrong, gradient = evaluate(current, y, y_target, salt, i + 1)
            best_wrong = ops.where(rows(wrong), current, best_wrong)
            fooled = ops.logical_or(fooled, wrong)
            history = ops.scatter_update(
                history,
                ops.expand_dims(ops.expand_dims(i, 0), 0),
                ops.expand_dims(value, 0),
            )
            better = value > best_value
            best = ops.where(rows(better), current, best)
            best_gradient = ops.where(rows(better), gradient, best_gradient)
            best_value = ops.where(better, value, best_value)

            # At a checkpoint: halve the step of each example whose loss rose
            # in at most rho of the last k steps, or that did not improve
            # since the last check without a halving then; restart it from
            # its best point.
            k = ops.take(check_windows, i)
            lags = ops.arange(longest)
            newer = ops.mod(i - lags, steps)
            older = ops.mod(i - lags - 1, steps)
            rose = ops.take(history, newer, axis=0) > ops.take(history, older, axis=0)
            in_window = ops.expand_dims(lags < k, -1)
            count = ops.sum(ops.cast(ops.logical_and(rose, in_window), "float32"), 0)
            oscillating = count <= ops.cast(k, "float32") * _RHO
            stalled = ops.logical_and(last_reduced < 0.5, last_best >= best_value)
            halve = ops.logical_and(
                ops.logical_or(oscillating, stalled), ops.take(check_flags, i) > 0
            )
            checking = ops.take(check_flags, i) > 0
            last_reduced = ops.where(checking, ops.cast(halve, "float32"), last_reduced)
            last_best = ops.where(checking, best_value, last_best)
            size = ops.where(halve, size / 2.0, size)
            current = ops.where(rows(halve), best, current)
            gradient = ops.where(rows(halve), best_gradient, gradient)
            return (current, previous, gradient, size, best, best_gradient,
                    best_value, best_wrong, fooled, history, last_best,
                    last_reduced)  # fmt: skip

        state = ops.fori_loop(0, steps, step, state)
        best, best_value, best_wrong, fooled = state[4], state[6], state[7], state[8]
        return ops.where(rows(fooled), best_wrong, best), fooled, best_value

    return attack
