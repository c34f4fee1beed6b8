"""Dual exponents, per-example gradient norms and worst-case perturbations.

Everything here is backend-agnostic (`keras.ops`) and works on a *list* of
tensors that share their leading (batch) axis: a model with several inputs
is regularized over the concatenation of all its differentiable inputs, so
each example's norm is taken jointly over every tensor in the list.

The mathematics: for a perturbation norm `p` with dual exponent `q`
(`1/p + 1/q = 1`), Hölder's inequality gives

    max_{||r||_p <= sigma} g . r = sigma * ||g||_q,

attained at the worst-case perturbation

    r* = sigma * sign(g) * |g|^(q-1) / ||g||_q^(q-1).

The three named members are the limits of that formula: `linf` (q = 1,
r* = sigma * sign(g)), `l2` (q = 2, r* = sigma * g / ||g||_2) and `l1`
(q = inf, all of sigma on the coordinate(s) of largest |g_i|).
"""

from __future__ import annotations

import math
from typing import Union

from keras import ops

#: A perturbation norm: "linf", "l2", "l1" or a float p >= 1.
Norm = Union[str, float, int]

_NAMED_NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0}
_NAMES_BY_P = {p: name for name, p in _NAMED_NORMS.items()}


def canonical_norm(norm: Norm) -> Union[str, float]:
    """Validates a perturbation norm and returns its canonical spelling.

    Named members stay names; floats equal to 1, 2 or inf become "l1", "l2"
    and "linf"; any other float p > 1 stays a float.

    Args:
        norm: "linf", "l2", "l1" (also "inf") or a number p >= 1.

    Returns:
        "linf", "l2", "l1" or a float p.

    Raises:
        ValueError: if `norm` is an unknown name, not a number, NaN or p < 1.

    Examples:
        >>> canonical_norm(2.0)
        'l2'
        >>> canonical_norm(3)
        3.0
    """
    if isinstance(norm, str):
        name = norm.lower()
        if name in ("inf", "l_inf"):
            name = "linf"
        if name not in _NAMED_NORMS:
            raise ValueError(
                "Argument `norm` must be 'linf', 'l2', 'l1' or a number "
                f"p >= 1. Received: norm={norm!r}"
            )
        return name
    if isinstance(norm, bool) or not isinstance(norm, (int, float)):
        raise ValueError(
            "Argument `norm` must be 'linf', 'l2', 'l1' or a number p >= 1. "
            f"Received: norm={norm!r} of type {type(norm).__name__}"
        )
    p = float(norm)
    if math.isnan(p) or p < 1.0:
        raise ValueError(
            f"Argument `norm` must be a number p >= 1. Received: norm={norm!r}"
        )
    return _NAMES_BY_P.get(p, p)


def norm_exponent(norm: Norm) -> float:
    """Returns the exponent p of a perturbation norm (`math.inf` for linf).

    Examples:
        >>> norm_exponent("linf")
        inf
    """
    norm = canonical_norm(norm)
    return _NAMED_NORMS[norm] if isinstance(norm, str) else norm


def dual_exponent(norm: Norm) -> float:
    """Returns q with 1/p + 1/q = 1: the gradient norm that `norm` penalizes.

    Args:
        norm: a perturbation norm (see `canonical_norm`).

    Returns:
        `1.0` for "linf", `2.0` for "l2", `math.inf` for "l1", `p / (p - 1)`
        otherwise.

    Examples:
        >>> dual_exponent("linf"), dual_exponent(3.0)
        (1.0, 1.5)
    """
    p = norm_exponent(norm)
    if p == math.inf:
        return 1.0
    if p == 1.0:
        return math.inf
    return p / (p - 1.0)


def _as_list(tensors):
    tensors = tensors if isinstance(tensors, (list, tuple)) else [tensors]
    return [ops.convert_to_tensor(t) for t in tensors]


def _reduce_rows(tensor, reduce):
    """Reduces every axis but the first (batch) one, keeping dims."""
    axes = tuple(range(1, len(tensor.shape)))
    return reduce(tensor, axis=axes, keepdims=True) if axes else tensor


def _joint_max_abs(leaves):
    """Per-example max |g| over every leaf, shaped (batch,)."""
    maxima = [ops.reshape(_reduce_rows(ops.abs(t), ops.max), (-1,)) for t in leaves]
    return maxima[0] if len(maxima) == 1 else ops.max(ops.stack(maxima), axis=0)


def _joint_sum(values):
    """Per-example sum over every leaf of already elementwise values."""
    sums = [ops.reshape(_reduce_rows(v, ops.sum), (-1,)) for v in values]
    return sums[0] if len(sums) == 1 else ops.sum(ops.stack(sums), axis=0)


def per_row(values, like):
    """Broadcasts a (batch,) tensor against `like` (batch, ...)."""
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))


def _safe_pow_norm(leaves, q: float, scale):
    """(sum |g|^q)^(1/q) per example, finite with zero derivative at g = 0.

    Rows are divided by a constant `scale` (their max |g|) so |g|^q cannot
    under- or overflow; since the norm is homogeneous, the scaled expression
    has exactly the norm's value and gradient. The `where` before and after
    the root keeps the root's infinite derivative at 0 out of the graph (the
    "double where").
    """
    nonzero = scale > 0
    safe_scale = ops.where(nonzero, scale, ops.ones_like(scale))
    total = _joint_sum([(ops.abs(t) / per_row(safe_scale, t)) ** q for t in leaves])
    safe_total = ops.where(nonzero, total, ops.ones_like(total))
    root = ops.where(nonzero, safe_total ** (1.0 / q), ops.zeros_like(total))
    return root * scale


def per_example_norm(gradients, order: float):
    """Per-example q-norm of one tensor or jointly of a list of tensors.

    `||g_i||_q = (sum_j |g_ij|^q)^(1/q)` over every non-batch coordinate of
    every tensor in `gradients`. Safe to differentiate at g = 0 (the L2 norm's
    derivative g / ||g|| is defined as 0 there), which the penalty form needs
    since it backpropagates through this norm.

    Args:
        gradients: a tensor of shape (batch, ...) or a list of such tensors.
        order: q >= 1, or `math.inf`.

    Returns:
        A tensor of shape (batch,).

    Examples:
        >>> import numpy as np
        >>> g = np.array([[3.0, -4.0], [0.0, 0.0]], "float32")
        >>> np.asarray(per_example_norm(g, 2.0)).tolist()
        [5.0, 0.0]
    """
    leaves = _as_list(gradients)
    if order == math.inf:
        return _joint_max_abs(leaves)
    if order == 1.0:
        return _joint_sum([ops.abs(t) for t in leaves])
    scale = ops.stop_gradient(_joint_max_abs(leaves))
    return _safe_pow_norm(leaves, float(order), scale)


def worst_case_perturbation(gradients, norm: Norm, sigma: float):
    """The first-order worst-case perturbation r* in the `norm`-ball of radius
    `sigma`: the maximizer of g . r over ||r||_p <= sigma (Hölder).

    | norm   | r*                                                          |
    |--------|-------------------------------------------------------------|
    | linf   | sigma * sign(g)  (the FGSM step)                            |
    | l2     | sigma * g / ||g||_2                                         |
    | l1     | sigma * sign(g_i) on the coordinate(s) of largest |g_i|,    |
    |        | shared equally among ties                                   |
    | p      | sigma * sign(g) * |g|^(q-1) / ||g||_q^(q-1)                 |

    The norm is taken per example and jointly over a list of tensors. An
    example whose gradient is exactly zero gets r* = 0. The result carries no
    gradient (it is a constant of the objective).

    Args:
        gradients: dL/dx, a tensor of shape (batch, ...) or a list of them.
        norm: the perturbation norm p (see `canonical_norm`).
        sigma: the radius, >= 0.

    Returns:
        A tensor (or list of tensors) shaped like `gradients`.

    Examples:
        >>> import numpy as np
        >>> g = np.array([[0.5, -2.0, 1.0]], "float32")
        >>> np.asarray(worst_case_perturbation(g, "linf", 0.1), "float64").round(3).tolist()
        [[0.1, -0.1, 0.1]]
        >>> np.asarray(worst_case_perturbation(g, "l1", 0.1), "float64").round(3).tolist()
        [[0.0, -0.1, 0.0]]
    """
    norm = canonical_norm(norm)
    leaves = [ops.stop_gradient(t) for t in _as_list(gradients)]
    if norm == "linf":
        directions = [ops.sign(t) for t in leaves]
    elif norm == "l1":
        top = _joint_max_abs(leaves)
        masks = [
            ops.cast(
                ops.logical_and(ops.abs(t) == per_row(top, t), per_row(top, t) > 0),
                t.dtype,
            )
            for t in leaves
        ]
        ties = ops.maximum(_joint_sum(masks), 1.0)
        directions = [ops.sign(t) * m / per_row(ties, t) for t, m in zip(leaves, masks)]
    else:
        q = dual_exponent(norm)
        scale = _joint_max_abs(leaves)
        safe_scale = ops.where(scale > 0, scale, ops.ones_like(scale))
        # r* is invariant to rescaling g, so work with u = g / max|g|.
        units = [t / per_row(safe_scale, t) for t in leaves]
        denom = _safe_pow_norm(units, q, ops.ones_like(scale)) ** (q - 1.0)
        denom = ops.where(denom > 0, denom, ops.ones_like(denom))
        directions = [
            ops.sign(u) * ops.abs(u) ** (q - 1.0) / per_row(denom, u) for u in units
        ]
    radius = [ops.cast(sigma, t.dtype) * d for t, d in zip(leaves, directions)]
    return radius if isinstance(gradients, (list, tuple)) else radius[0]
