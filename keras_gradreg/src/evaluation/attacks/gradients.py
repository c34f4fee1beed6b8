"""Input gradients of the attack loss (for pictures and checks)."""

from __future__ import annotations

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.evaluation.attacks._runner import (
    _compiled,
    _loss_and_gradient,
    _map_batches,
    _setup,
)
from keras_gradreg.src.evaluation.attacks._scoring import AttackLoss


@keras_gradreg_export("keras_gradreg.input_gradients")
def input_gradients(
    model,
    x,
    y,
    *,
    loss: AttackLoss = "cross_entropy",
    from_logits: bool | None = None,
    input_range=(0.0, 1.0),
    batch_size: int = 500,
) -> np.ndarray:
    """Each example's own input gradient `dL(x_i, y_i) / dx_i`, the quantity
    the family penalizes (computed like the attacks: `training=False`, on
    logits, compiled).

    Args:
        model: a Keras classifier.
        x: inputs of shape (N, ...) inside `input_range`.
        y: integer labels.
        loss: as in `fgm`.
        from_logits: as in `fgm`.
        input_range: as in `fgm`.
        batch_size: examples per compiled call.

    Returns:
        A NumPy array shaped like `x`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> input_gradients(model, np.zeros((4, 3), "float32"), [0, 1, 0, 1]).shape
        (4, 3)
    """
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, loss, from_logits, batch_size
    )
    shape = x.shape[1:]

    def build():
        return lambda x, y: _loss_and_gradient(scoring, shape, x, y, False)[2]

    run = _compiled(model, ("gradient", scoring.key, shape), build)
    return _map_batches(run, x, y, batch_size)
