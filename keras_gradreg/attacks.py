"""First-order attacks for evaluating robustness: FGM and PGD.

Threat model: each input x may be replaced by any x' with
`||x' - x||_p <= eps` inside the declared input range (default [0, 1]); the
norm is taken over all of an example's coordinates. The model is always run
with `training=False`, its state is never updated, and the attack's steps are
compiled (XLA on TensorFlow and JAX; eager on PyTorch).

Classification losses are computed on logits: when a functional model ends in
a softmax (a `Dense` layer with softmax activation or a softmax `Activation`
/ `Softmax` layer), the attack differentiates the logits before it, because a
saturated float32 softmax has exactly zero gradient and would mask the
model's weakness. Other models' outputs are taken as logits, or as
probabilities when they look like them (non-negative rows summing to 1).

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.full((2, 4), 0.5, "float32")
    >>> x_adv = pgd(model, x, np.array([0, 1]), "linf", eps=0.1, steps=5, seed=0)
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Union

import keras
import numpy as np
from keras import ops

from keras_gradreg import backend as _backend
from keras_gradreg._checks import check_integer
from keras_gradreg.api_export import keras_gradreg_export
from keras_gradreg.norms import (
    Norm,
    canonical_norm,
    per_example_norm,
    worst_case_perturbation,
)

#: Named attack objectives: the cross-entropy of the logits, or the
#: Carlini-Wagner margin `max_{j != y} z_j - z_y`.
OBJECTIVES = ("cross_entropy", "margin")
#: A loss: one of `OBJECTIVES` or a callable `(y_true, y_pred) -> (batch,)`
#: per-example losses (a `keras.losses.Loss` is used unreduced).
AttackLoss = Union[str, Callable]
_PGD_NORMS = ("linf", "l2", "l1")

# model -> {static configuration: compiled attack}.
_CACHE_ATTRIBUTE = "_keras_gradreg_compiled_attacks"


# ----------------------------------------------------------------- checking


def _check_eps(eps):
    if isinstance(eps, bool) or not (
        isinstance(eps, (int, float, np.number)) and math.isfinite(eps) and eps >= 0
    ):
        raise ValueError(
            f"Argument `eps` must be a finite number >= 0. Received: eps={eps!r}"
        )
    return float(eps)


def _check_positive_int(name, value):
    return int(check_integer(name, value, types=(int, np.integer)))


def _check_input_range(input_range):
    if input_range is None:
        return None
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            "Argument `input_range` must be a pair (low, high) or None. "
            f"Received: input_range={input_range!r}"
        ) from None
    if not low < high:
        raise ValueError(
            "Argument `input_range` must satisfy low < high. "
            f"Received: input_range={input_range!r}"
        )
    return low, high


def _prepare(x, y, input_range):
    """Validates the data; returns float inputs and integer labels."""
    if isinstance(x, (dict, list, tuple)):
        raise ValueError(
            "The attacks perturb one input array; models with several inputs "
            "(a dict or list of arrays) are not supported. Received: x of type "
            f"{type(x).__name__}"
        )
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.config.floatx())
    y = labels_of(y, len(x))
    if len(x) and not np.all(np.isfinite(x)):
        raise ValueError(
            "Argument `x` must be finite: an attack on NaN or inf inputs "
            f"measures nothing. Received: x with {np.size(x) - np.isfinite(x).sum()} "
            "non-finite values"
        )
    if input_range is not None and len(x):
        low, high = input_range
        if x.min() < low or x.max() > high:
            raise ValueError(
                f"Argument `x` must lie in input_range={input_range} (the "
                "attack's threat model). Rescale the inputs or pass the range "
                f"they use. Received: x in [{x.min():g}, {x.max():g}]"
            )
    return x, y


def labels_of(y, n: int) -> np.ndarray:
    """`y` as a 1-D array of `n` class labels.

    Raises:
        ValueError: for one-hot or other multi-column labels, or a count
            that differs from the inputs'.
    """
    y = np.asarray(y)
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ValueError(
            "Argument `y` must hold one integer class label per example (for "
            "one-hot labels pass `np.argmax(y, axis=-1)`). Received: "
            f"y.shape={y.shape}"
        )
    y = y.reshape(-1)
    if len(y) != n:
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: len(x)={n}, len(y)={len(y)}"
        )
    return y


def _check_labels(y, num_classes):
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


# --------------------------------------------------------------- geometry


def _rows(values, like):
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))


def _project(delta, norm, eps):
    """Projects each row of the flat `delta` (batch, d) onto the eps-ball."""
    if norm == "linf":
        return ops.clip(delta, -eps, eps)
    if norm == "l2":
        length = per_example_norm(delta, 2.0)
        scale = ops.minimum(1.0, eps / ops.maximum(length, 1e-12))
        return delta * _rows(scale, delta)
    return _project_l1(delta, eps)


def _project_l1(delta, eps):
    """Euclidean projection onto the l1 ball (Duchi et al., 2008)."""
    magnitude = ops.abs(delta)
    descending = ops.flip(ops.sort(magnitude, axis=-1), axis=-1)
    cumulative = ops.cumsum(descending, axis=-1)
    index = ops.cast(ops.arange(1, ops.shape(delta)[-1] + 1), delta.dtype)
    active = ops.cast(descending - (cumulative - eps) / index > 0, "int32")
    count = ops.maximum(ops.sum(active, axis=-1), 1)
    total = ops.take_along_axis(cumulative, ops.expand_dims(count - 1, -1), axis=-1)
    threshold = (total - eps) / ops.cast(ops.expand_dims(count, -1), delta.dtype)
    projected = ops.sign(delta) * ops.maximum(magnitude - threshold, 0.0)
    inside = ops.expand_dims(ops.sum(magnitude, axis=-1) <= eps, -1)
    return ops.where(inside, delta, projected)


def _ascent_direction(gradient, norm, x_current, input_range, l1_coordinates):
    """The steepest-ascent step of unit `norm` length for a flat gradient."""
    if norm == "linf":
        return ops.sign(gradient)
    if norm == "l2":
        length = per_example_norm(gradient, 2.0)
        return gradient / _rows(ops.maximum(length, 1e-12), gradient)
    # l1: spread the step over the largest |g| coordinates that can still move
    # (Tramer & Boneh's SLIDE); pushing a coordinate beyond the input range
    # would be clipped away and waste the step.
    if input_range is not None:
        low, high = input_range
        stuck = ops.logical_or(
            ops.logical_and(x_current <= low, gradient < 0),
            ops.logical_and(x_current >= high, gradient > 0),
        )
        gradient = ops.where(stuck, ops.zeros_like(gradient), gradient)
    magnitude = ops.abs(gradient)
    kth = ops.top_k(magnitude, l1_coordinates)[0][:, -1:]
    chosen = ops.cast(ops.logical_and(magnitude >= kth, magnitude > 0), gradient.dtype)
    count = ops.maximum(ops.sum(chosen, axis=-1, keepdims=True), 1.0)
    return ops.sign(gradient) * chosen / count


def _clip_to_range(x, delta, input_range):
    if input_range is None:
        return delta
    return ops.clip(x + delta, *input_range) - x


# ------------------------------------------------------------ the attacks


def _compiled(model, key, build):
    """The compiled program `key` of `model`, built once. The cache lives on
    the model: its programs close over the model, so a cache keyed by the
    model elsewhere would keep every attacked model alive; owned by the
    model, both go together."""
    per_model = model.__dict__.get(_CACHE_ATTRIBUTE)
    if per_model is None:
        per_model = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, per_model)  # untracked
    if key not in per_model:
        per_model[key] = _backend.compile_attack(model, build())
    return per_model[key]


def _loss_and_gradient(scoring, shape, x_flat, y, targeted):
    """Per-example attack losses, class scores and d(sum of losses)/dx at the
    flat inputs `x_flat` (batch, d), viewed as examples of `shape`."""

    def fn(x):
        scores = scoring.scores(ops.reshape(x, (-1,) + shape))
        return _per_example_loss(scoring, scores, y, targeted), scores

    return _backend.values_and_input_gradient(fn, x_flat)


def _improves(success, value, best_success, best_value):
    """Whether a candidate beats the best so far: fooling the model first,
    then a higher loss (so, among fooling points, the strongest one)."""
    same = success == best_success
    return (success & ~best_success) | (same & (value > best_value))


def _build_pgd(scoring, shape, norm, steps, targeted, input_range, l1_coordinates):
    """The whole PGD run on one batch, as one function of arrays:
    `(x, y, x_start, eps, step_size) -> (x_adv, success, loss)` on flat
    inputs."""

    def evaluate(x_flat, y):
        values, scores, gradient = _loss_and_gradient(
            scoring, shape, x_flat, y, targeted
        )
        values = ops.cast(values, "float32")
        return _succeeded(scores, y, targeted), values, gradient

    def keep_best(delta, success, value, best):
        best_delta, best_success, best_value = best
        better = _improves(success, value, best_success, best_value)
        return (
            ops.where(ops.expand_dims(better, -1), delta, best_delta),
            ops.where(better, success, best_success),
            ops.where(better, value, best_value),
        )

    def attack(x, y, x_start, eps, step_size):
        eps = ops.cast(eps, x.dtype)
        step_size = ops.cast(step_size, x.dtype)

        def step(i, state):
            delta, best = state
            success, value, gradient = evaluate(x + delta, y)
            best = keep_best(delta, success, value, best)
            direction = _ascent_direction(
                gradient, norm, x + delta, input_range, l1_coordinates
            )
            delta = _project(delta + step_size * direction, norm, eps)
            return _clip_to_range(x, delta, input_range), best

        # The clean input is the first candidate: the result's loss is never
        # below the clean loss, whatever the random start.
        success, value, _ = evaluate(x, y)
        best = (ops.zeros_like(x), success, value)
        delta, best = ops.fori_loop(0, steps, step, (x_start - x, best))
        success, value, _ = evaluate(x + delta, y)
        best_delta, best_success, best_value = keep_best(delta, success, value, best)
        return x + best_delta, best_success, best_value

    return attack


def _build_fgm(scoring, shape, norm, targeted, input_range):
    def attack(x, y, eps):
        _, _, gradient = _loss_and_gradient(scoring, shape, x, y, targeted)
        delta = worst_case_perturbation(gradient, norm, ops.cast(eps, x.dtype))
        return x + _clip_to_range(x, delta, input_range)

    return attack


def _batches(n, batch_size):
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _pad(array, size):
    """Pads the batch axis to `size` by repeating the first rows, so every
    call of a compiled attack has the same shape (no retracing)."""
    missing = size - len(array)
    return array if missing == 0 else np.concatenate([array, array[:missing]])


def _map_batches(run, x, y, batch_size, *constants):
    """`run(x_batch, y_batch, *constants)` over padded batches of the flat
    `x`; returns the outputs, shaped like `x`."""
    flat = x.reshape(len(x), -1)
    out = np.empty_like(flat)
    for start, stop in _batches(len(x), batch_size):
        xb, yb = _pad(flat[start:stop], batch_size), _pad(y[start:stop], batch_size)
        out[start:stop] = ops.convert_to_numpy(run(xb, yb, *constants))[: stop - start]
    return out.reshape(x.shape)


def _setup(model, x, y, input_range, loss, from_logits, batch_size):
    input_range = _check_input_range(input_range)
    batch_size = _check_positive_int("batch_size", batch_size)
    x, y = _prepare(x, y, input_range)
    if len(x) == 0:
        raise ValueError("Argument `x` must hold at least one example. Received: 0")
    probe = x[: min(len(x), 8)]
    scoring = _scoring(model, loss, from_logits, probe)
    if isinstance(scoring.loss, str):
        classes = int(ops.shape(scoring.scores(probe))[-1])
        y = _check_labels(y, classes)
    return x, y, input_range, scoring, batch_size


@keras_gradreg_export("keras_gradreg.fgm")
def fgm(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    loss: AttackLoss = "cross_entropy",
    from_logits: bool | None = None,
    targeted: bool = False,
    input_range=(0.0, 1.0),
    batch_size: int = 500,
) -> np.ndarray:
    """Fast gradient method: one worst-case step `x + r*` in the `norm`-ball
    of radius `eps` (FGSM for "linf"), clipped to `input_range`.

    `r* = argmax_{||r||_p <= eps} g . r = worst_case_perturbation(g, norm,
    eps)` with `g = dL/dx` of each example's own loss: the exact maximizer
    for a model that is linear in x.

    Args:
        model: a Keras classifier (any model, not only `GradRegModel`).
        x: inputs, an array of shape (N, ...) inside `input_range`.
        y: integer labels, shape (N,) (target labels when `targeted`).
        norm: the perturbation norm p ("linf", "l2", "l1" or p >= 1).
        eps: the radius, >= 0.
        loss: "cross_entropy" (default), "margin" (Carlini-Wagner) or a
            callable `(y_true, y_pred) -> per-example losses`.
        from_logits: whether the model's outputs are logits; None infers it
            (see the module docstring).
        targeted: step toward the labels `y` instead of away from them.
        input_range: `(low, high)` of valid inputs, or None for unbounded.
        batch_size: examples per compiled call.

    Returns:
        The adversarial inputs, a NumPy array shaped like `x`.

    Raises:
        ValueError: for eps < 0, an unknown norm or loss, mismatched x/y
            lengths, labels out of range, or x outside `input_range`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.full((3, 4), 0.5, "float32")
        >>> x_adv = fgm(model, x, np.zeros(3, "int32"), "linf", 0.1)
        >>> float(np.abs(x_adv - x).max()) <= 0.1 + 1e-6
        True
    """
    norm, eps = canonical_norm(norm), _check_eps(eps)
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, loss, from_logits, batch_size
    )
    shape = x.shape[1:]
    run = _compiled(
        model,
        ("fgm", scoring.key, shape, norm, targeted, input_range, str(x.dtype)),
        lambda: _build_fgm(scoring, shape, norm, targeted, input_range),
    )
    return _map_batches(run, x, y, batch_size, np.float32(eps))


def _random_start(rng, x, norm, eps, input_range):
    """A random point of the eps-ball around each flat row, in range."""
    if norm == "linf":
        delta = rng.uniform(-eps, eps, x.shape)
    else:
        noise = rng.laplace(size=x.shape) if norm == "l1" else rng.normal(size=x.shape)
        order = 1 if norm == "l1" else 2
        length = np.linalg.norm(noise, ord=order, axis=1, keepdims=True)
        radius = eps * rng.uniform(0.0, 1.0, (len(x), 1))
        delta = noise / np.maximum(length, 1e-12) * radius
    start = x + delta.astype(x.dtype)
    return start if input_range is None else np.clip(start, *input_range)


@keras_gradreg_export("keras_gradreg.pgd")
def pgd(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    step_size: float | None = None,
    steps: int = 20,
    *,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss: AttackLoss = "cross_entropy",
    from_logits: bool | None = None,
    input_range=(0.0, 1.0),
    l1_sparsity: float = 0.95,
    batch_size: int = 500,
    seed: int | None = None,
) -> np.ndarray:
    """Projected gradient descent (Madry et al., 2018): `steps` steepest-
    ascent steps of length `step_size`, each projected back onto the
    eps-ball around x and into `input_range`.

    `x_{t+1} = clip_range(Proj_{||x' - x||_p <= eps}(x_t + step_size *
    d_p(g_t)))`, with the steepest-ascent direction `d_p` of the norm:
    `sign(g)` for linf, `g / ||g||_2` for l2, and for l1 a sparse step over
    the coordinates whose |g| is in the top `1 - l1_sparsity` fraction (the
    SLIDE step of Tramer & Boneh, 2019, with Duchi et al.'s l1 projection).
    Per example, the first iterate that fools the model is kept, otherwise
    the one of highest loss, over all steps and restarts.

    Defaults: linf, 20 steps of `2.5 * eps / steps`, one random start, the
    cross-entropy of the logits.

    Args:
        model: a Keras classifier.
        x: inputs of shape (N, ...) inside `input_range`.
        y: integer labels (target labels when `targeted`).
        norm: "linf", "l2" or "l1".
        eps: the radius, >= 0.
        step_size: the length of one step in `norm`; default `2.5 * eps /
            steps`.
        steps: iterations, >= 1.
        random_start: start each restart at a random point of the ball
            (otherwise at x).
        restarts: independent runs, >= 1; the worst case per example is kept.
        targeted: move toward the labels `y` (success: prediction == y).
        loss: "cross_entropy", "margin" (Carlini-Wagner) or a callable
            `(y_true, y_pred) -> per-example losses`.
        from_logits: whether outputs are logits; None infers it.
        input_range: `(low, high)` of valid inputs, or None for unbounded.
        l1_sparsity: for l1, the quantile of |g| above which coordinates
            move, in [0, 1).
        batch_size: examples per compiled call.
        seed: seed of the random starts (None: a fresh one).

    Returns:
        The adversarial inputs, a NumPy array shaped like `x`.

    Raises:
        ValueError: for eps < 0, steps < 1, restarts < 1, step_size <= 0, a
            norm other than linf/l2/l1, mismatched x/y, labels out of range,
            or x outside `input_range`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).uniform(size=(8, 4)).astype("float32")
        >>> x_adv = pgd(model, x, np.zeros(8, "int32"), "l2", eps=0.5, seed=0)
        >>> bool(np.linalg.norm(x_adv - x, axis=1).max() <= 0.5 + 1e-5)
        True
    """
    norm, eps = canonical_norm(norm), _check_eps(eps)
    if norm not in _PGD_NORMS:
        raise ValueError(
            f"Argument `norm` of `pgd` must be one of {_PGD_NORMS} (use `fgm` "
            f"for other p). Received: norm={norm!r}"
        )
    steps = _check_positive_int("steps", steps)
    restarts = _check_positive_int("restarts", restarts)
    if step_size is None:
        step_size = 2.5 * eps / steps
    elif isinstance(step_size, bool) or not (
        isinstance(step_size, (int, float, np.number))
        and math.isfinite(step_size)
        and step_size > 0
    ):
        raise ValueError(
            "Argument `step_size` must be a finite number > 0 or None. "
            f"Received: step_size={step_size!r}"
        )
    if not 0.0 <= l1_sparsity < 1.0:
        raise ValueError(
            "Argument `l1_sparsity` must be in [0, 1). "
            f"Received: l1_sparsity={l1_sparsity!r}"
        )
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, loss, from_logits, batch_size
    )
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    coordinates = max(1, int(round((1.0 - l1_sparsity) * flat.shape[1])))
    run = _compiled(
        model,
        ("pgd", scoring.key, shape, norm, steps, targeted, input_range, coordinates),
        lambda: _build_pgd(
            scoring, shape, norm, steps, targeted, input_range, coordinates
        ),
    )
    rng = np.random.default_rng(seed)
    best = flat.copy()
    best_success = np.zeros(len(x), bool)
    best_value = np.full(len(x), -np.inf, "float32")
    for _ in range(restarts):
        for start, stop in _batches(len(x), batch_size):
            size = stop - start
            xb = flat[start:stop]
            x0 = _random_start(rng, xb, norm, eps, input_range) if random_start else xb
            x_adv, success, value = (
                ops.convert_to_numpy(t)[:size]
                for t in run(
                    _pad(xb, batch_size),
                    _pad(y[start:stop], batch_size),
                    _pad(x0, batch_size),
                    np.float32(eps),
                    np.float32(step_size),
                )
            )
            part = slice(start, stop)
            better = _improves(success, value, best_success[part], best_value[part])
            best[part][better] = x_adv[better]
            best_success[part] |= success
            best_value[part] = np.where(better, value, best_value[part])
    return best.reshape(x.shape)


@keras_gradreg_export("keras_gradreg.classification_accuracy")
def classification_accuracy(model, x, y, batch_size: int = 500) -> float:
    """Fraction of `x` whose arg-max prediction equals the integer label.

    Example:
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
    x, y = _prepare(x, y, None)
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


@keras_gradreg_export("keras_gradreg.fgsm_accuracy")
def fgsm_accuracy(
    model,
    x,
    y,
    eps: float = 0.1,
    *,
    norm: Norm = "linf",
    loss: AttackLoss = "cross_entropy",
    input_range=(0.0, 1.0),
    batch_size: int = 500,
) -> float:
    """Accuracy of a classifier on `fgm(model, x, y, norm, eps)` examples.

    Args:
        model: a classifier whose outputs are class scores, shape (N, classes).
        x: inputs inside `input_range`.
        y: integer labels.
        eps: the radius (as in `fgm`).
        norm: the perturbation norm (as in `fgm`).
        loss: the attack's loss (as in `fgm`).
        input_range: `(low, high)` of valid inputs.
        batch_size: examples per compiled call.

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

    Example:
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


@keras_gradreg_export("keras_gradreg.attacks.FGM")
@dataclasses.dataclass(frozen=True)
class FGM:
    """The fast gradient method as a configured attack (see `fgm`): one
    worst-case step; FGSM for linf.

    Example:
        >>> FGM().name
        'FGM'
    """

    loss: AttackLoss = "cross_entropy"

    @property
    def name(self) -> str:
        return "FGM"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        """Returns `fgm(model, x, y, norm, eps, ...)` with this configuration."""
        kwargs.pop("seed", None)  # FGM is deterministic
        return fgm(
            model, x, y, norm, eps, loss=self.loss, input_range=input_range, **kwargs
        )


@keras_gradreg_export("keras_gradreg.attacks.PGD")
@dataclasses.dataclass(frozen=True)
class PGD:
    """Projected gradient descent as a configured attack (see `pgd`).

    Defaults: 20 steps of `2.5 * eps / steps` from one random start, the
    cross-entropy of the logits.

    Example:
        >>> PGD(steps=40, restarts=2).name
        'PGD-40x2'
    """

    steps: int = 20
    restarts: int = 1
    step_size: float | None = None
    random_start: bool = True
    loss: AttackLoss = "cross_entropy"

    def __post_init__(self):
        _check_positive_int("steps", self.steps)
        _check_positive_int("restarts", self.restarts)

    @property
    def name(self) -> str:
        suffix = f"x{self.restarts}" if self.restarts > 1 else ""
        loss = "" if self.loss == "cross_entropy" else f" ({self.loss})"
        return f"PGD-{self.steps}{suffix}{loss}"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        """Returns `pgd(model, x, y, norm, eps, ...)` with this configuration."""
        return pgd(
            model,
            x,
            y,
            norm,
            eps,
            self.step_size,
            self.steps,
            random_start=self.random_start,
            restarts=self.restarts,
            loss=self.loss,
            input_range=input_range,
            **kwargs,
        )


def get(attack) -> FGM | PGD:
    """Resolves "fgm", "pgd" or an attack object (returned unchanged).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(attack, str) and attack.lower() in ("fgm", "fgsm"):
        return FGM()
    if isinstance(attack, str) and attack.lower() == "pgd":
        return PGD()
    if callable(attack) and hasattr(attack, "name"):
        return attack
    raise ValueError(
        "An attack must be 'fgm', 'pgd' or an attack object such as "
        f"`keras_gradreg.attacks.PGD(steps=40)`. Received: {attack!r}"
    )
