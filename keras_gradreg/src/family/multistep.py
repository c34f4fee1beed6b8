"""The multistep form's inner maximization, written once in `keras.ops`.

The family trains `mean_i max_{||r_i||_p <= sigma} L(x_i + r_i)`. The
perturb form takes the first-order maximizer `r*`; the multistep form runs
`k` steps of projected steepest ascent on the loss itself (the PGD
adversarial training of Madry et al., 2018):

    r_0     = 0, or sigma * u with u a random point of the unit ball
    r_{t+1} = clip_range(Proj_sigma(r_t + step_size * d_p(g_t)))
    g_t     = dL_i/dx at x_i + r_t

with the steepest-ascent direction `d_p` and the projection of
`keras_gradreg.geometry` (the same code the attacks run), jointly over all
regularized inputs of an example. The last iterate `r_k` enters the
objective as a constant: by Danskin's theorem the gradient of `max_r L(x +
r)` with respect to the weights is that of `L(x + r_k)` at the maximizer,
so no step is differentiated (first derivatives only).

The backends supply `input_gradient(deltas)`, the per-example `dL_i/dx` at
the moved inputs from one forward and one backward pass with the weights
held constant; everything else is here.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
from keras import ops

from keras_gradreg.src.checks import check_number
from keras_gradreg.src.family import geometry
from keras_gradreg.src.family.norms import Norm, norm_exponent, per_example_norm


def flatten(leaves: Sequence) -> object:
    """The selected inputs of each example as one row: shape (batch, d)."""
    rows = [ops.reshape(t, (-1, math.prod(t.shape[1:]))) for t in leaves]
    return rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=1)


def unflatten(flat, like: Sequence) -> list:
    """Splits rows made by `flatten` back into tensors shaped like `like`."""
    sizes = [math.prod(t.shape[1:]) for t in like]
    if len(like) == 1:
        pieces = [flat]
    else:
        pieces = ops.split(
            flat, [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)], 1
        )
    return [ops.reshape(p, (-1,) + tuple(t.shape[1:])) for p, t in zip(pieces, like)]


def random_unit_start(
    leaves: Sequence,
    norm: Norm,
    seed,
) -> list:
    """A random point of the unit `norm`-ball per example, jointly over
    `leaves`: uniform in the linf cube; otherwise a Gaussian (l1: Laplace)
    direction of unit p-norm at a radius uniform in [0, 1], the starts of
    `geometry.random_start`. Scale it by sigma.

    Args:
        leaves: the regularized inputs, tensors of shape (batch, ...).
        norm: the perturbation norm (canonical).
        seed: a `keras.random.SeedGenerator`.

    Returns:
        A list of tensors shaped like `leaves`.
    """
    flat = flatten(leaves)
    shape = ops.shape(flat)
    dtype = flat.dtype
    if norm == "linf":
        return unflatten(keras.random.uniform(shape, -1.0, 1.0, dtype, seed), leaves)
    if norm == "l1":
        # Laplace(0, 1) as the log-ratio of two uniforms.
        tiny = 1e-7
        u = keras.random.uniform((2,) + tuple(shape), tiny, 1.0, dtype, seed)
        noise = ops.log(u[0]) - ops.log(u[1])
    else:
        noise = keras.random.normal(shape, 0.0, 1.0, dtype, seed)
    length = per_example_norm(noise, norm_exponent(norm))
    radius = keras.random.uniform(shape[:1], 0.0, 1.0, dtype, seed)
    scale = radius / ops.maximum(length, 1e-12)
    return unflatten(noise * ops.expand_dims(scale, -1), leaves)


def check_step_size(step_size):
    """`step_size` checked for the forms that ascend in steps: None (the
    default, `2.5 * sigma / steps`) or a finite number > 0.

    Raises:
        ValueError: naming the argument and the value received.
    """
    if step_size is None:
        return None
    return check_number("step_size", step_size, 0.0, exclusive=True, finite=True)


def maximize(
    input_gradient: Callable,
    clean_gradients: Sequence,
    leaves: Sequence,
    *,
    norm: Norm,
    sigma,
    steps: int,
    step_size=None,
    input_range=None,
    l1_sparsity: float = 0.95,
    start: Sequence | None = None,
    weights: Sequence | None = None,
) -> list:
    """`steps` steps of projected steepest ascent on the loss.

    Args:
        input_gradient: `deltas -> dL_i/dx` at `clip_range(x + deltas)`, one
            list entry per leaf (weights held constant).
        clean_gradients: `dL_i/dx` at x, the first step's gradient when
            there is no random start (it costs no extra pass).
        leaves: the clean regularized inputs.
        norm: the perturbation norm (canonical).
        sigma: the radius (a scalar tensor; it may change during `fit`).
        steps: the number of ascent steps k.
        step_size: the length of one step in the norm; default
            `2.5 * sigma / steps` (Madry et al.).
        input_range: `(low, high)` that `x + r` is kept in, or None.
        l1_sparsity: for the l1 norm, the quantile of |g| above which
            coordinates move in one step.
        start: a point of the unit ball from `random_unit_start`, or None
            to start at x.
        weights: the `feature_mask` per leaf, or None. The ascent then runs
            on `s` with `r = w * s` in the ball `||s||_p <= sigma` (the
            gradient in `s` is `w * g`), so r is 0 where w is 0.

    Returns:
        The last iterate `r_k` as a list shaped like `leaves`, inside the
        sigma-ball and with `x + r_k` inside `input_range`; it carries no
        gradient.

    Examples:
        >>> import numpy as np
        >>> w = np.array([[1.0, -2.0]], "float32")  # L(x) = w . x
        >>> r = maximize(
        ...     lambda d: [w], [w], [np.zeros_like(w)], norm="l2", sigma=1.0, steps=3
        ... )
        >>> np.asarray(r[0], "float64").round(3).tolist()  # sigma * w / ||w||_2
        [[0.447, -0.894]]
    """
    x = flatten([ops.stop_gradient(ops.convert_to_tensor(t)) for t in leaves])
    sigma = ops.cast(sigma, x.dtype)
    step = sigma * (2.5 / steps) if step_size is None else step_size
    step = ops.cast(step, x.dtype)
    coordinates = geometry.l1_coordinates(l1_sparsity, x.shape[1])
    w = None
    if weights is not None:
        w = flatten(
            [ops.ones_like(t) * ops.cast(v, t.dtype) for t, v in zip(leaves, weights)]
        )

    def perturbation(s):
        """`r = w * s` clipped to the input range, and `s` following it."""
        delta = geometry.clip_to_range(x, s if w is None else w * s, input_range)
        if w is None:
            return delta, delta
        return delta, ops.where(w > 0, delta / ops.where(w > 0, w, 1.0), s)

    s = ops.zeros_like(x) if start is None else flatten(start) * sigma
    delta, s = perturbation(s)
    for i in range(steps):
        if i == 0 and start is None:
            gradient = clean_gradients
        else:
            gradient = input_gradient(unflatten(delta, leaves))
        gradient = ops.stop_gradient(ops.cast(flatten(gradient), x.dtype))
        if w is not None:
            gradient = w * gradient
        direction = geometry.ascent_direction(
            gradient, norm, x + delta, input_range, coordinates
        )
        delta, s = perturbation(geometry.project(s + step * direction, norm, sigma))
    return unflatten(ops.stop_gradient(delta), leaves)
