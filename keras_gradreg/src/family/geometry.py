"""The geometry of the perturbation balls: projections, steepest-ascent
steps and random starts, shared by the attacks."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_gradreg.src.family.norms import (
    norm_exponent,
    per_example_norm,
    per_row,
    worst_case_perturbation,
)

# --------------------------------------------------------------- geometry


def project(delta, norm, eps):
    """Projection of each row of `delta` onto `{r : ||r||_p <= eps}`.

    linf: `clip(delta, -eps, eps)`; l2: `delta * min(1, eps / ||delta||_2)`;
    l1: `project_l1` (all three Euclidean projections). For a number p,
    whose Euclidean projection has no closed form, the radial retraction
    `delta * min(1, eps / ||delta||_p)`: a point of the ball, and `delta`
    itself when it is inside.

    Args:
        delta: flat perturbations, shape (batch, d).
        norm: "linf", "l2", "l1" or a number p > 1.
        eps: the radius (a scalar or a tensor broadcastable to the rows).

    Returns:
        The projected perturbations, shaped like `delta`.
    """
    if norm == "linf":
        return ops.clip(delta, -eps, eps)
    if norm == "l1":
        return project_l1(delta, eps)
    length = per_example_norm(delta, norm_exponent(norm))
    scale = ops.minimum(1.0, eps / ops.maximum(length, 1e-12))
    return delta * per_row(scale, delta)


def project_l1(delta, eps):
    """Euclidean projection of each row onto the l1 ball of radius `eps`
    (Duchi et al., 2008): soft-thresholding `sign(d) max(|d| - theta, 0)`
    with the threshold theta that makes the l1 norm exactly `eps`; rows
    already inside are returned unchanged.

    Examples:
        >>> import numpy as np
        >>> r = project_l1(np.array([[3.0, -1.0, 0.0]], "float32"), 2.0)
        >>> np.asarray(r).round(3).tolist()
        [[2.0, -0.0, 0.0]]
    """
    magnitude = ops.abs(delta)
    descending = ops.flip(ops.sort(magnitude, axis=-1), axis=-1)
    cumulative = ops.cumsum(descending, axis=-1)
    index = ops.cast(ops.arange(1, ops.shape(delta)[-1] + 1), delta.dtype)
    active = ops.cast(descending - (cumulative - eps) / index > 0, "int32")
    count = ops.maximum(ops.sum(active, axis=-1), 1)
    total = ops.take_along_axis(cumulative, ops.expand_dims(count - 1, -1), axis=-1)
    threshold = (total - eps) / ops.cast(ops.expand_dims(count, -1), delta.dtype)
    projected = ops.sign(delta) * ops.maximum(magnitude - threshold, 0.0)
    inside = ops.expand_dims(ops.sum(magnitude, axis=-1) <= eps, -1)
    return ops.where(inside, delta, projected)


def ascent_direction(gradient, norm, x_current, input_range, l1_coordinates):
    """The steepest-ascent direction of unit p-norm: `argmax_{||d||_p <= 1} g . d`.

    linf: `sign(g)`; l2: `g / ||g||_2`; a number p: the Hölder maximizer
    `sign(g)|g|^(q-1) / ||g||_q^(q-1)` (`worst_case_perturbation`); l1: the
    sparse step of Tramer and Boneh (SLIDE), spread evenly over the
    `l1_coordinates` largest `|g_i|` that can still move inside
    `input_range`.

    Args:
        gradient: flat gradients, shape (batch, d).
        norm: "linf", "l2", "l1" or a number p > 1.
        x_current: the current flat points (l1 only: which coordinates are
            stuck at the range's bounds).
        input_range: `(low, high)` or None.
        l1_coordinates: how many coordinates an l1 step spreads over.

    Returns:
        Directions shaped like `gradient`.
    """
    if norm == "linf":
        return ops.sign(gradient)
    if norm == "l2":
        length = per_example_norm(gradient, 2.0)
        return gradient / per_row(ops.maximum(length, 1e-12), gradient)
    if norm != "l1":
        return worst_case_perturbation(gradient, norm, 1.0)
    # l1: spread the step over the largest |g| coordinates that can still move
    # (Tramer & Boneh's SLIDE); pushing a coordinate beyond the input range
    # would be clipped away and waste the step.
    if input_range is not None:
        low, high = input_range
        stuck = ops.logical_or(
            ops.logical_and(x_current <= low, gradient < 0),
            ops.logical_and(x_current >= high, gradient > 0),
        )
        gradient = ops.where(stuck, ops.zeros_like(gradient), gradient)
    magnitude = ops.abs(gradient)
    kth = ops.top_k(magnitude, l1_coordinates)[0][:, -1:]
    chosen = ops.cast(ops.logical_and(magnitude >= kth, magnitude > 0), gradient.dtype)
    count = ops.maximum(ops.sum(chosen, axis=-1, keepdims=True), 1.0)
    return ops.sign(gradient) * chosen / count


def l1_coordinates(l1_sparsity: float, size: int) -> int:
    """How many of `size` coordinates an l1 step moves: those whose |g| is
    above the `l1_sparsity` quantile, at least one.

    Examples:
        >>> l1_coordinates(0.95, 784)
        39
    """
    return max(1, int(round((1.0 - l1_sparsity) * size)))


def clip_to_range(x, delta, input_range):
    """The perturbation `clip(x + delta, low, high) - x` that keeps `x +
    delta` inside `input_range` (`delta` itself when it is None)."""
    if input_range is None:
        return delta
    return ops.clip(x + delta, *input_range) - x


def random_start(rng, x, norm, eps, input_range):
    """A random point of the eps-ball around each flat row of `x`, clipped
    to `input_range`: uniform in the linf cube; for l2 and l1 a Gaussian or
    Laplace direction scaled to a uniform radius in [0, eps].

    Args:
        rng: a `numpy.random.Generator`.
        x: flat NumPy inputs, shape (batch, d).
        norm: "linf", "l2" or "l1".
        eps: the radius.
        input_range: `(low, high)` or None.

    Returns:
        NumPy starting points shaped like `x`.
    """
    if norm == "linf":
        delta = rng.uniform(-eps, eps, x.shape)
    else:
        noise = rng.laplace(size=x.shape) if norm == "l1" else rng.normal(size=x.shape)
        order = 1 if norm == "l1" else 2
        length = np.linalg.norm(noise, ord=order, axis=1, keepdims=True)
        radius = eps * rng.uniform(0.0, 1.0, (len(x), 1))
        delta = noise / np.maximum(length, 1e-12) * radius
    start = x + delta.astype(x.dtype)
    return start if input_range is None else np.clip(start, *input_range)
