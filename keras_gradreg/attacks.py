"""First-order attacks for evaluating robustness.

Threat model: a perturbation r with ||r||_p <= eps added to each input, the
result clipped to the declared input range. The model is always run with
`training=False` and its state is never updated.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_gradreg import backend as _backend
from keras_gradreg.api_export import keras_gradreg_export
from keras_gradreg.norms import Norm, canonical_norm, worst_case_perturbation


def _summed_loss_fn(model, loss):
    """Returns `(x, y) -> sum_i L(model(x_i), y_i)`: its input gradient is
    each example's own dL_i/dx_i."""
    if loss is None:
        if getattr(model, "_compile_loss", None) is None:
            raise ValueError(
                "The model is not compiled, so the attack has no loss. Pass "
                "`loss=` (e.g. 'sparse_categorical_crossentropy') or compile "
                "the model first. Received: loss=None"
            )
        per_batch = lambda y, y_pred: model._compile_loss(y, y_pred)  # noqa: E731
    else:
        loss_fn = keras.losses.get(loss)
        per_batch = lambda y, y_pred: ops.mean(loss_fn(y, y_pred))  # noqa: E731

    def summed(x, y):
        y_pred = model(x, training=False)
        loss = per_batch(y, y_pred)
        return loss * ops.cast(ops.shape(x)[0], loss.dtype)

    return summed


@keras_gradreg_export("keras_gradreg.fgm")
def fgm(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    loss=None,
    input_range=(0.0, 1.0),
    batch_size: int = 256,
) -> np.ndarray:
    """Fast gradient method: `x + r*`, the first-order worst case in the
    `norm`-ball of radius `eps` (FGSM for "linf"), clipped to `input_range`.

    `r* = worst_case_perturbation(dL/dx, norm, eps)`, one gradient per example.

    Args:
        model: a Keras model (any, not only `GradRegModel`).
        x: inputs, a NumPy array of shape (N, ...).
        y: labels for the loss, shape (N, ...).
        norm: the perturbation norm p ("linf", "l2", "l1" or p >= 1).
        eps: the radius, >= 0.
        loss: the loss to ascend; default: the model's compiled loss.
        input_range: `(low, high)` to clip to, or None for no clipping.
        batch_size: examples per gradient computation.

    Returns:
        The adversarial inputs, a NumPy array shaped like `x` (float inputs
        keep their dtype; integer ones become `keras.config.floatx()`).

    Raises:
        ValueError: for eps < 0, an unknown norm, mismatched x/y lengths or
            an uncompiled model without `loss`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.full((3, 4), 0.5, "float32")
        >>> x_adv = fgm(model, x, np.zeros(3, "int32"), "linf", 0.1,
        ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> float(np.abs(x_adv - x).max()) <= 0.1 + 1e-6
        True
    """
    norm = canonical_norm(norm)
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(
            f"Argument `eps` must be a finite number >= 0. Received: eps={eps!r}"
        )
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.config.floatx())
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    summed = _summed_loss_fn(model, loss)
    out = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        _, (g,) = _backend.value_and_input_gradient(
            lambda leaves, yb=yb: summed(leaves[0], yb), [xb]
        )
        x_adv = xb + ops.convert_to_numpy(worst_case_perturbation(g, norm, eps))
        if input_range is not None:
            x_adv = np.clip(x_adv, *input_range)
        out[start : start + batch_size] = x_adv
    return out


@keras_gradreg_export("keras_gradreg.fgsm_accuracy")
def fgsm_accuracy(
    model,
    x,
    y,
    eps: float = 0.1,
    *,
    norm: Norm = "linf",
    loss=None,
    input_range=(0.0, 1.0),
    batch_size: int = 256,
) -> float:
    """Accuracy of a classifier on `fgm(model, x, y, norm, eps)` examples.

    Args:
        model: a classifier whose outputs are class scores, shape (N, classes).
        x, y: inputs and integer labels.
        eps, norm, loss, input_range, batch_size: as in `fgm`.

    Returns:
        The fraction of adversarial examples still classified correctly.
    """
    x_adv = fgm(
        model,
        x,
        y,
        norm,
        eps,
        loss=loss,
        input_range=input_range,
        batch_size=batch_size,
    )
    return classification_accuracy(model, x_adv, y, batch_size=batch_size)


@keras_gradreg_export("keras_gradreg.classification_accuracy")
def classification_accuracy(model, x, y, batch_size: int = 256) -> float:
    """Fraction of `x` whose arg-max prediction equals the integer label."""
    scores = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(scores, axis=-1) == np.asarray(y).reshape(-1)))
