"""Validation of attack inputs and labels, and classification accuracy."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, labels_of  # noqa: F401
from keras_gradreg.src.family.norms import canonical_norm

# ----------------------------------------------------------------- checking


def check_attack_norm(norm, supported, attack, hint=""):
    """`norm` canonicalized, or a ValueError naming the attack's norms."""
    norm = canonical_norm(norm)
    if norm not in supported:
        raise ValueError(
            f"Argument `norm` of `{attack}` must be one of {supported}{hint}. "
            f"Received: norm={norm!r}"
        )
    return norm


def check_labels(y, num_classes):
    labels = y.reshape(len(y), -1)
    if labels.shape[1] != 1 or not np.issubdtype(y.dtype, np.integer):
        if labels.shape[1] == 1 and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype("int64")
        else:
            raise ValueError(
                "Argument `y` must hold integer class labels, one per "
                f"example. Received: y.shape={y.shape}, y.dtype={y.dtype}"
            )
    labels = labels.reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Argument `y` must hold labels in [0, {num_classes}) for a model "
            f"with {num_classes} outputs. Received: labels in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels.astype("int32")


@keras_gradreg_export("keras_gradreg.classification_accuracy")
def classification_accuracy(model, x, y, batch_size: int = 500) -> float:
    """Fraction of `x` whose arg-max prediction equals the integer label.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> model.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
        >>> classification_accuracy(model, np.eye(2, dtype="float32"), [0, 0])
        0.5
    """
    return float(np.mean(correct_predictions(model, x, y, batch_size)))


def correct_predictions(model, x, y, batch_size: int = 500) -> np.ndarray:
    """Boolean array: whether each example's predicted class is `y` (the
    arg-max, or `p > 0.5` for a one-unit sigmoid classifier)."""
    x, y = check_data(x, y, None)
    scores = model.predict(x, batch_size=batch_size, verbose=0)
    return predicted_classes(scores) == y


def predicted_classes(scores) -> np.ndarray:
    """Class predictions from a classifier's outputs `(batch, classes)`; a
    single output column is a binary classifier's probability of class 1.

    Raises:
        ValueError: for outputs that are not a classifier's (several output
            arrays, other ranks, or one column outside [0, 1]).
    """
    _check_classifier_output(scores)
    scores = np.asarray(scores)
    if scores.shape[-1] == 1:
        return (scores[:, 0] > 0.5).astype("int64")
    return np.argmax(scores, axis=-1)


def _check_classifier_output(scores, *, from_logits=None):
    if isinstance(scores, (dict, list, tuple)):
        raise ValueError(
            "The attacks and `evaluate_robustness` score classifiers with one "
            "output; this model returns several. Received: outputs of type "
            f"{type(scores).__name__}"
        )
    shape = tuple(scores.shape)
    if len(shape) != 2:
        raise ValueError(
            "The attacks and `evaluate_robustness` score classifiers whose "
            "output is (batch, classes). Received: output shape "
            f"{shape}"
        )
    if shape[-1] == 1 and not from_logits:
        values = np.asarray(ops.convert_to_numpy(scores), "float64")
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(
                "A one-unit output is scored as a binary classifier's "
                "probability (a sigmoid); this one leaves [0, 1], as a "
                "regression model's does, and robust *accuracy* is undefined "
                "for it. Received: outputs in "
                f"[{values.min():g}, {values.max():g}]"
            )
