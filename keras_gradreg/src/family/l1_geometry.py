"""The geometry of l1-bounded perturbations inside an input box, for l1-APGD
(Croce & Hein, 2021, "Mind the box"): the exact Euclidean projection onto the
intersection of the l1 ball and the box, and the sparse steepest-ascent
direction."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.family.geometry import project_l1


def project_l1_box(x, delta, eps, input_range):
    """Euclidean projection of each row of `delta` onto
    `{r : ||r||_1 <= eps, low <= x + r <= high}`.

    With `a_i = |delta_i|` and `u_i` the room in the box along `sign(delta_i)`
    (`high - x_i` for a positive entry, `x_i - low` otherwise; the box holds
    `x`, so `u_i >= 0`), the KKT conditions give

        r_i = sign(delta_i) min(max(a_i - lam, 0), u_i),

    where `lam = 0` if that point lies in the ball (only the box clips),
    else `lam > 0` solves `f(lam) = sum_i min(max(a_i - lam, 0), u_i) = eps`.
    `f` is piecewise linear and non-increasing in lam, with slope minus the
    number of coordinates whose `lam` lies in `[max(a_i - u_i, 0), a_i]`;
    the solution is found exactly by sorting those 2d breakpoints (the
    reference code's `L1_projection` finds the same breakpoint by bisection).

    Args:
        x: flat centres, shape (batch, d), inside `input_range`.
        delta: flat perturbations, shape (batch, d).
        eps: the radius, >= 0 (a scalar or a (batch, 1) tensor).
        input_range: `(low, high)`, or None for the plain l1 projection
            (`geometry.project_l1`).

    Returns:
        The projected perturbations, shaped like `delta`.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.9, 0.5, 0.5]], "float32")
        >>> r = project_l1_box(x, np.array([[0.5, 0.3, -0.1]], "float32"), 0.3,
        ...                    (0.0, 1.0))
        >>> np.asarray(r, "float64").round(3).tolist()
        [[0.1, 0.2, -0.0]]
    """
    if input_range is None:
        return project_l1(delta, eps)
    low, high = input_range
    magnitude = ops.abs(delta)
    room = ops.maximum(ops.where(delta > 0, high - x, x - low), 0.0)
    clipped = ops.minimum(magnitude, room)  # f(0): the box clip alone
    # Breakpoints: the slope of f drops by one at max(a - u, 0) (the
    # coordinate leaves the box bound) and rises by one at a (it reaches 0).
    starts = ops.maximum(magnitude - room, 0.0)
    points = ops.concatenate([starts, magnitude], axis=-1)
    changes = ops.concatenate(
        [-ops.ones_like(starts), ops.ones_like(magnitude)], axis=-1
    )
    order = ops.argsort(points, axis=-1)
    points = ops.take_along_axis(points, order, axis=-1)
    slopes = ops.cumsum(ops.take_along_axis(changes, order, axis=-1), axis=-1)
    # f at each sorted breakpoint: f(0) plus the integral of the slope.
    gaps = points[:, 1:] - points[:, :-1]
    total = ops.sum(clipped, axis=-1, keepdims=True)
    drops = ops.cumsum(gaps * slopes[:, :-1], axis=-1)
    values = total + ops.concatenate([ops.zeros_like(total), drops], axis=-1)
    # The last breakpoint with f >= eps; lam lies on the segment after it.
    eps = ops.cast(eps, delta.dtype)
    last = ops.maximum(ops.sum(ops.cast(values >= eps, "int32"), axis=-1) - 1, 0)
    last = ops.expand_dims(last, -1)
    at = ops.take_along_axis(points, last, axis=-1)
    value = ops.take_along_axis(values, last, axis=-1)
    slope = -ops.take_along_axis(slopes, last, axis=-1)
    lam = at + (value - eps) / ops.maximum(slope, 1.0)
    lam = ops.where(total > eps, lam, ops.zeros_like(lam))
    return ops.sign(delta) * ops.minimum(ops.maximum(magnitude - lam, 0.0), room)


def sparse_direction(gradient, fraction):
    """l1-APGD's sparse step direction: `sign(g)` on the coordinates whose
    `|g_i|` is at least the `(1 - fraction)` quantile of the row's `|g|`
    (the `index = clip(floor((1 - fraction) d), 0, d - 1)`-th smallest,
    as in the reference code), divided by how many of them are non-zero,
    so that a step of size eta moves the point by eta in l1 norm.

    Args:
        gradient: flat gradients, shape (batch, d).
        fraction: per-row fraction of coordinates to move, shape (batch,).

    Returns:
        Directions shaped like `gradient`, of l1 norm 1 (0 for a zero
        gradient).

    Examples:
        >>> import numpy as np
        >>> g = np.array([[0.1, -3.0, 2.0, 0.0]], "float32")
        >>> d = sparse_direction(g, np.array([0.5], "float32"))
        >>> np.asarray(d).tolist()
        [[0.0, -0.5, 0.5, 0.0]]
    """
    size = ops.shape(gradient)[-1]
    magnitude = ops.abs(gradient)
    index = ops.floor((1.0 - ops.cast(fraction, "float32")) * size)
    index = ops.cast(ops.clip(index, 0, size - 1), "int32")
    ascending = ops.sort(magnitude, axis=-1)
    threshold = ops.take_along_axis(ascending, ops.expand_dims(index, -1), axis=-1)
    step = ops.sign(gradient) * ops.cast(magnitude >= threshold, gradient.dtype)
    return step / (ops.sum(ops.abs(step), axis=-1, keepdims=True) + 1e-10)
