"""The label-free (virtual adversarial) member: its divergence and the
power iteration that gives its worst-case direction, in `keras.ops`.

The member replaces the loss by the divergence between the model's own
predictions (Miyato et al., 2018):

    D_i(r) = KL(p(x_i) || p(x_i + r)),   p(x_i) held constant,

which needs no label. `D(0) = 0` is a minimum, so `dD/dr = 0` at r = 0 and
the family's first-order worst case is undefined. To second order
`D(r) ~ r^T H r / 2` with H the (positive semi-definite) Hessian at r = 0,
whose maximizer over the l2 ball is `sigma * v`, v the dominant eigenvector
of H. Power iteration finds it with first derivatives only, since
`dD/dr (xi d) = xi H d + O(xi^2)`:

    d_0 random,   d_{k+1} = normalize(dD/dr at xi d_k).

For another norm p the worst case of the gradient at the last point,
`worst_case_perturbation(dD/dr (xi d_K), p, sigma)`, is used (for l2 it is
`sigma * d_{K+1}`).
"""

from __future__ import annotations

from typing import Callable, Sequence

from keras import ops

from keras_gradreg.src.family.multistep import flatten, unflatten
from keras_gradreg.src.family.norms import per_example_norm


def kl_divergence(p_clean, p_moved, epsilon: float = 1e-7):
    """`KL(p_clean || p_moved)` per example, over the last axis.

    Args:
        p_clean: class probabilities at x, shape (batch, classes);
            differentiated through unless it is a constant (stop its
            gradient for the label-free member's fixed target).
        p_moved: class probabilities at x + r, the same shape.
        epsilon: floor of the probabilities inside the logarithms.

    Returns:
        A tensor of shape (batch,).

    Examples:
        >>> import numpy as np
        >>> p = np.array([[0.5, 0.5]], "float32")
        >>> np.asarray(kl_divergence(p, p)).tolist()
        [0.0]
    """
    p = ops.convert_to_tensor(p_clean)
    log_ratio = ops.log(ops.maximum(p, epsilon)) - ops.log(
        ops.maximum(p_moved, epsilon)
    )
    return ops.sum(p * log_ratio, axis=-1)


def _unit_rows(flat):
    length = per_example_norm(flat, 2.0)
    return flat / ops.expand_dims(ops.maximum(length, 1e-12), -1)


def power_iteration(
    divergence_gradient: Callable,
    start: Sequence,
    xi: float,
    iterations: int,
) -> list:
    """The dominant eigenvector of each example's divergence Hessian, by
    `iterations` steps of power iteration with finite differences.

    Args:
        divergence_gradient: `deltas -> dD_i/dr` at `r = deltas` (one list
            entry per input), weights held constant.
        start: a random direction per example (e.g. Gaussian), a list of
            tensors shaped like the inputs.
        xi: the finite-difference radius, small against the inputs' scale.
        iterations: power-iteration steps K >= 1.

    Returns:
        The unit-l2 directions `d_K` (jointly over the inputs of an
        example), a list shaped like `start`.
    """
    d = _unit_rows(flatten(start))
    for _ in range(iterations):
        gradient = divergence_gradient(unflatten(xi * d, start))
        d = _unit_rows(ops.stop_gradient(flatten(gradient)))
    return unflatten(d, start)
