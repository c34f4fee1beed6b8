"""The losses Auto-PGD ascends: the cross-entropy, and the
difference-of-logits-ratio (DLR) loss of Croce & Hein (2020)."""

from __future__ import annotations

from keras import ops


def dlr_loss(scores, y, y_target=None):
    """The difference-of-logits-ratio loss per example (Croce & Hein, 2020).

    Untargeted: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`; targeted
    (`y_target` given): `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`,
    with `z_pi1 >= z_pi2 >= ...` the sorted logits. Invariant to shifting and
    scaling the logits, so log-probabilities serve as well as logits.

    Args:
        scores: logits (or log-probabilities), shape (batch, classes).
        y: integer labels, shape (batch,).
        y_target: target labels for the targeted variant, or None.

    Returns:
        The losses, shape (batch,).
    """
    classes = ops.shape(scores)[-1]
    needed = 3 if y_target is None else 4
    if isinstance(classes, int) and classes < needed:
        raise ValueError(
            f"The {'targeted ' if y_target is not None else ''}DLR loss compares "
            f"the {needed - 1} largest competing scores and needs at least "
            f"{needed} classes. Received: scores with {classes} classes"
        )
    ordered = ops.flip(ops.sort(scores, axis=-1), axis=-1)
    true = ops.one_hot(y, classes, dtype=scores.dtype)
    z_true = ops.sum(scores * true, axis=-1)
    if y_target is None:
        z_other = ops.max(scores - 1e9 * true, axis=-1)
        return -(z_true - z_other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    z_target = ops.sum(scores * ops.one_hot(y_target, classes, dtype=scores.dtype), -1)
    spread = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3])
    return -(z_true - z_target) / (spread + 1e-12)


def apgd_loss(scores, y, y_target, loss: str, targeted: bool):
    """APGD's loss per example: `dlr_loss` (targeted at `y_target` when
    `targeted`) or the cross-entropy of `scores` read as logits."""
    if loss == "dlr":
        return dlr_loss(scores, y, y_target if targeted else None)
    true = ops.one_hot(y, ops.shape(scores)[-1], dtype=scores.dtype)
    return ops.logsumexp(scores, axis=-1) - ops.sum(scores * true, axis=-1)
