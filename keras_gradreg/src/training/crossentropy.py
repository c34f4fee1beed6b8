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
`-log softmax(log max(p, floor))_y`: the same function of the logits
without the clip, whose derivative with respect to the logits is `p - e_y`
up to rounding wherever `p_y >= floor`.

Only the probabilities reach the loss, so its logit gradient passes
through `d log p / dp = 1 / p`, and a second derivative (the penalty form
differentiates `dL/dx` again) through `-1 / p^2`. The floor keeps both
finite in float32: `FIRST_ORDER_FLOOR` (1e-30) leaves room for a mixed
precision loss scale on `1 / p`, `SECOND_ORDER_FLOOR` (1e-15) for `1 / p^2`,
which overflows float32 below about 1e-19 (a penalty step on a softmax
that put `p_y = 1e-20` on the true class made every weight NaN). Below the
floor the true class's share of the gradient is lost, as it is below
Keras's clip (1e-7): an example misclassified by a logit margin of more
than 69 (first order) or 34 (penalty). On TensorFlow, where Keras keeps the
softmax's logits on its output, the logits themselves are differentiated,
with no floor.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_gradreg.src import keras_compat as _keras_compat

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
#: Probability floors (see the module's docstring): 1/p stays finite under
#: any loss scale below 3e8, and 1/p^2 leaves the same room.
FIRST_ORDER_FLOOR = 1e-30
SECOND_ORDER_FLOOR = 1e-15


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


def through_the_clip(
    value, sparse: bool, y, y_pred, sample_weight=None, floor=FIRST_ORDER_FLOOR
):
    """`value` (Keras's cross-entropy of `y_pred`), differentiated as the
    unclipped cross-entropy of the logits `log p`.

    Returns `u + stop_gradient(value - u)` with `u = (1/B) sum_i w_i
    (-log softmax(log max(p_i, floor))_{y_i})`: the value is Keras's, the
    gradient is that of the cross-entropy without the clip, equal to
    Keras's wherever the clip does not bind.

    Args:
        value: the compiled loss of `y_pred`.
        sparse: integer labels (True) or one-hot ones (False).
        y: the labels.
        y_pred: the probabilities, shape `(B, classes)`.
        sample_weight: None, or one weight per example.
        floor: the smallest probability differentiated; `SECOND_ORDER_FLOOR`
            where the gradient is differentiated again.

    Returns:
        A scalar equal to `value`.

    Examples:
        >>> p = ops.convert_to_tensor([[1.0, 0.0]])  # a saturated softmax
        >>> y = ops.convert_to_tensor([0])
        >>> value = ops.mean(keras.losses.sparse_categorical_crossentropy(y, p))
        >>> bool(through_the_clip(value, True, y, p) == value)  # Keras's value
        True
    """
    # At least float32: float16's range would floor the very probabilities
    # whose gradient this keeps.
    wide = keras.backend.standardize_dtype(y_pred.dtype) == "float64"
    dtype = "float64" if wide else "float32"
    logits = _keras_compat.softmax_logits(y_pred)
    if logits is not None:
        logits = ops.cast(logits, dtype)
    else:
        y_pred = ops.cast(y_pred, dtype)
        p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        logits = ops.log(ops.maximum(p, floor))
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
