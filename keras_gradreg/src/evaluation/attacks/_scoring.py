"""How an attack turns a classifier's outputs into class scores and losses."""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

import keras
import numpy as np
from keras import ops

from keras_gradreg.src.evaluation.attacks._data import _check_classifier_output

#: Named attack objectives: the cross-entropy of the logits, or the
#: Carlini-Wagner margin `max_{j != y} z_j - z_y`.
OBJECTIVES = ("cross_entropy", "margin")
#: A loss: one of `OBJECTIVES` or a callable `(y_true, y_pred) -> (batch,)`
#: per-example losses (a `keras.losses.Loss` is used unreduced).
AttackLoss = Union[str, Callable]

# ------------------------------------------------------------------ scoring


def _is_softmax(activation):
    return activation is keras.activations.softmax or (
        getattr(activation, "__name__", None) == "softmax"
    )


def _logits_function(model):
    """`x -> logits` for a functional model ending in a softmax, else None."""
    if isinstance(model, keras.Sequential) and model.layers:
        head = model.layers[-1]

        def body(x, training=False):
            for layer in model.layers[:-1]:
                x = layer(x, training=training)
            return x

    elif isinstance(model, keras.Model) and hasattr(model, "inputs"):
        try:
            head = model.layers[-1]
            # A head called once, whose output is the model's only output.
            if len(model.outputs) != 1 or head.output is not model.outputs[0]:
                return None
            body = keras.Model(model.input, head.input)
        except (AttributeError, ValueError, TypeError):
            return None
    else:
        return None
    if isinstance(head, keras.layers.Softmax) or (
        isinstance(head, keras.layers.Activation) and _is_softmax(head.activation)
    ):
        return lambda x: body(x, training=False)
    if (
        isinstance(head, keras.layers.Dense)
        and _is_softmax(head.activation)
        and getattr(head, "quantization_mode", None) is None
    ):

        def logits(x):
            z = ops.matmul(body(x, training=False), head.kernel)
            return z + head.bias if head.use_bias else z

        return logits
    return None


def _looks_like_probabilities(scores):
    scores = np.asarray(scores, "float64")
    return bool(
        scores.ndim == 2
        and np.all(scores >= 0)
        and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    )


@dataclasses.dataclass(frozen=True)
class _Scoring:
    """How an attack turns inputs into class scores and losses.

    `scores(x)` gives logits (or log-probabilities, which differ from logits
    by a per-example constant) for the named objectives, or the model's
    outputs for a callable loss.
    """

    scores: Callable
    loss: AttackLoss
    key: tuple  # what the compiled attack depends on


def _scoring(model, loss, from_logits, x_probe) -> _Scoring:
    def call(x):
        return model(x, training=False)

    if callable(loss) and not isinstance(loss, str):
        return _Scoring(call, loss, ("callable", id(loss)))
    if loss not in OBJECTIVES:
        raise ValueError(
            f"Argument `loss` must be one of {OBJECTIVES} or a callable "
            f"(y_true, y_pred) -> per-example losses. Received: loss={loss!r}"
        )
    probe = call(x_probe)
    _check_classifier_output(probe, from_logits=from_logits)
    if int(probe.shape[-1]) == 1:
        return _binary_scoring(model, call, loss, from_logits)
    if from_logits is None:
        logits = _logits_function(model)
        if logits is not None:
            return _Scoring(logits, loss, (loss, "head"))
        from_logits = not _looks_like_probabilities(ops.convert_to_numpy(probe))
    if from_logits:
        return _Scoring(call, loss, (loss, "logits"))

    def log_probabilities(x):
        p = call(x)
        return ops.log(ops.maximum(p, ops.cast(1e-30, p.dtype)))

    return _Scoring(log_probabilities, loss, (loss, "probabilities"))


def _binary_scoring(model, call, loss, from_logits) -> _Scoring:
    """A one-unit binary classifier as two-class logits `[0, z]`, where
    `z` is the logit of class 1 (`softmax([0, z])[1] = sigmoid(z)`): from
    the sigmoid head's pre-activation when the model ends in one, else
    `log p - log(1 - p)` of its probability output."""
    head = (
        getattr(model, "layers", [None])[-1] if getattr(model, "layers", None) else None
    )
    if from_logits:
        logit = call
    elif (
        from_logits is None
        and isinstance(head, keras.layers.Dense)
        and getattr(head.activation, "__name__", None) == "sigmoid"
        and len(getattr(model, "outputs", ()) or ()) == 1
        and head.output is model.outputs[0]
    ):
        body = keras.Model(model.input, head.input)

        def logit(x):
            z = ops.matmul(body(x, training=False), head.kernel)
            return z + head.bias if head.use_bias else z

    else:

        def logit(x):
            p = call(x)
            tiny = ops.cast(1e-30, p.dtype)
            return ops.log(ops.maximum(p, tiny)) - ops.log(ops.maximum(1 - p, tiny))

    def two_class(x):
        z = logit(x)
        return ops.concatenate([ops.zeros_like(z), z], axis=-1)

    return _Scoring(two_class, loss, (loss, "binary", bool(from_logits)))


def _per_example_loss(scoring, scores, y, targeted):
    """The quantity the attack ascends, per example."""
    if callable(scoring.loss) and not isinstance(scoring.loss, str):
        fn = scoring.loss.call if isinstance(scoring.loss, keras.losses.Loss) else None
        values = (fn or scoring.loss)(y, scores)
        values = ops.reshape(values, (ops.shape(scores)[0], -1))
        values = ops.mean(values, axis=1)
        return -values if targeted else values
    if keras.backend.standardize_dtype(scores.dtype) in ("float16", "bfloat16"):
        scores = ops.cast(scores, "float32")
    true = ops.one_hot(y, ops.shape(scores)[-1], dtype=scores.dtype)
    z_true = ops.sum(scores * true, axis=-1)
    if scoring.loss == "cross_entropy":
        base = ops.logsumexp(scores, axis=-1) - z_true
    else:
        z_other = ops.max(scores - 1e9 * true, axis=-1)
        base = z_other - z_true
    return -base if targeted else base


def _succeeded(scores, y, targeted):
    predicted = ops.cast(ops.argmax(scores, axis=-1), "int32")
    return predicted == y if targeted else predicted != y
