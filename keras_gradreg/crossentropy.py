"""The cross-entropy of softmax outputs, differentiated past Keras's clip.

Keras computes the cross-entropy of probabilities (`from_logits=False`) as
`-log(clip(p_y, eps, 1 - eps))` with `eps = 1e-7`. On JAX and torch (and
for the one-hot cross-entropy on TensorFlow too) the clip's derivative is
0 wherever `p_y > 1 - eps`, so for every confidently
classified example `dL/dx` and the weight gradient are exactly 0, although
the true ones, `(p - e_y)` back through the network, are small but not 0.
The gradient regularizers only need the direction of `dL/dx` (`r* = sigma
sign(g)` for linf, `sigma g / ||g||_2` for l2), so an exact 0 silently
drops those examples from the perturbed, finite-difference and multistep
forms: on Table I's FGSM-trained maxout MLP 18% of the training images in
training mode (with dropout) and 68% in inference mode. TensorFlow's
sparse cross-entropy differentiates the logits Keras keeps on the
softmax's output, so there it never vanished; the library now takes the
same gradient on every backend.

`through_the_clip` gives the loss Keras computes, with the gradient of
`-log softmax(log p)_y`: the same function of the logits without the clip,
whose derivative with respect to the logits is `p - e_y` up to rounding
(the probabilities are floored at the smallest normal number so that a
probability that underflowed to 0 cannot make it NaN).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

#: The compiled losses this applies to, by name: whether labels are sparse.
_CROSSENTROPIES = {
    "sparse_categorical_crossentropy": True,
    "categorical_crossentropy": False,
}
#: The names of their classes, which `compile()` accepts as well.
_CLASS_NAMES = {
    "SparseCategoricalCrossentropy": True,
    "CategoricalCrossentropy": False,
}
_CLASSES = {
    keras.losses.SparseCategoricalCrossentropy: True,
    keras.losses.CategoricalCrossentropy: False,
}


def probability_crossentropy(loss) -> bool | None:
    """Whether `loss` (what `compile()` received) is one of Keras's
    cross-entropies of probabilities reduced by the batch mean: True for
    the sparse one, False for the one-hot one, None for any other loss
    (logits, label smoothing, `ignore_class`, another reduction or axis,
    several outputs)."""
    if isinstance(loss, str):
        return _CROSSENTROPIES.get(loss, _CLASS_NAMES.get(loss))
    if callable(loss) and getattr(loss, "__name__", None) in _CROSSENTROPIES:
        if loss is getattr(keras.losses, loss.__name__):
            return _CROSSENTROPIES[loss.__name__]
        return None
    sparse = _CLASSES.get(type(loss))
    if sparse is None:
        return None
    config = loss.get_config()
    plain = (
        not config.get("from_logits", False)
        and not config.get("label_smoothing", 0.0)
        and config.get("ignore_class") is None
        and config.get("axis", -1) == -1
        and config.get("reduction", "sum_over_batch_size") == "sum_over_batch_size"
    )
    return sparse if plain else None


def through_the_clip(value, sparse: bool, y, y_pred, sample_weight=None):
    """`value` (Keras's cross-entropy of `y_pred`), differentiated as the
    unclipped cross-entropy of the logits `log p`.

    Returns `u + stop_gradient(value - u)` with `u = (1/B) sum_i w_i
    (-log softmax(log p_i)_{y_i})`: the value is Keras's, the gradient is
    that of the cross-entropy without the clip, equal to Keras's wherever
    the clip does not bind.

    Args:
        value: the compiled loss of `y_pred`.
        sparse: integer labels (True) or one-hot ones (False).
        y: the labels.
        y_pred: the probabilities, shape `(B, classes)`.
        sample_weight: None, or one weight per example.

    Returns:
        A scalar equal to `value`.

    Examples:
        >>> p = ops.convert_to_tensor([[1.0, 0.0]])  # a saturated softmax
        >>> y = ops.convert_to_tensor([0])
        >>> value = ops.mean(keras.losses.sparse_categorical_crossentropy(y, p))
        >>> bool(through_the_clip(value, True, y, p) == value)  # Keras's value
        True
    """
    # At least float32: float16's smallest normal number (6e-5) would floor
    # the very probabilities whose gradient this keeps.
    wide = keras.backend.standardize_dtype(y_pred.dtype) == "float64"
    dtype = "float64" if wide else "float32"
    tiny = float(np.finfo(dtype).tiny)
    y_pred = ops.cast(y_pred, dtype)
    p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    logits = ops.log(ops.maximum(p, tiny))
    if sparse:
        per_example = keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True
        )
    else:
        per_example = keras.losses.categorical_crossentropy(y, logits, from_logits=True)
    if sample_weight is not None:
        weights = ops.reshape(ops.cast(sample_weight, per_example.dtype), (-1,))
        per_example = per_example * weights
    size = ops.cast(ops.shape(per_example)[0], per_example.dtype)
    unclipped = ops.sum(per_example) / size
    value = ops.cast(value, unclipped.dtype)
    return unclipped + ops.stop_gradient(value - unclipped)
