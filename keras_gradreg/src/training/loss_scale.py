"""Mixed precision: the loss scale the train steps in `keras_gradreg.backend`
take the input gradient under (`input_gradient_loss_scale`), so that float16
backpropagation does not flush it to zero.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_gradreg.src.training.objective import batch_size


def input_gradient_loss_scale(optimizer, x):
    """The factor to take the input gradient under, or None.

    Under the `mixed_float16` policy Keras wraps the optimizer in a
    `LossScaleOptimizer`, and float16 backpropagation of an unscaled loss
    underflows to zero once `dL/dx` falls below float16's smallest subnormal
    (about 6e-8). The train steps therefore differentiate
    `(S / B) sum_i L_i`, where `S` is the optimizer's current loss scale,
    and divide the input gradient by `S / B` before it enters the penalty or
    the worst-case perturbation: the regularizer sees the same `g_i` as in
    float32. `S / B` is the factor by which the scaled batch-mean loss
    scales each example's share of the weight gradients, so the input
    gradient overflows when they do; the `LossScaleOptimizer` then skips the
    step and lowers `S`.

    Call it where the optimizer's variables hold their current values (in
    JAX, inside a `StatelessScope` mapping them).

    Args:
        optimizer: the model's optimizer (or None).
        x: the batch's inputs (for its size `B`).

    Returns:
        `S / B` as a float32 scalar, or None without loss scaling.
    """
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    if not optimizer.built:
        return None
    scale = ops.cast(ops.convert_to_tensor(optimizer.dynamic_scale), "float32")
    return scale / batch_size(x)


def scale_summed_loss(summed, scale):
    """`scale * summed` (or `summed` when `scale` is None): the quantity whose
    input gradient the train steps take (see `input_gradient_loss_scale`)."""
    return summed if scale is None else summed * ops.cast(scale, summed.dtype)


def unscale_input_gradients(gradients, scale):
    """Divides each input gradient by `scale` (a no-op when it is None)."""
    if scale is None:
        return list(gradients)
    return [g / ops.cast(scale, g.dtype) for g in gradients]
