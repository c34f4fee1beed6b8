"""Compiling, caching and batching attacks (shared by every attack)."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_gradreg.src.checks import check_data, check_input_range, check_integer
from keras_gradreg.src.evaluation.attacks._data import check_labels
from keras_gradreg.src.evaluation.attacks._scoring import _per_example_loss, _scoring
from keras_gradreg.src.training import backend as _backend

# model -> {static configuration: compiled attack}.
_CACHE_ATTRIBUTE = "_keras_gradreg_compiled_attacks"


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


def _keep_best(best, part, x_adv, success, value):
    """Folds one restart's batch into `best = (points, success, value)`
    (NumPy arrays, updated in place at rows `part`), by `_improves`."""
    points, best_success, best_value = best
    rows = np.arange(len(points))[part]  # `part` is a slice or row indices
    better = _improves(success, value, best_success[rows], best_value[rows])
    points[rows[better]] = x_adv[better]
    best_success[rows] |= success
    best_value[rows] = np.where(better, value, best_value[rows])


def _restart_batches(restart, best_success, batch_size):
    """The row indices of each batch of one restart: every point on the
    first, then only those no earlier restart fooled (as AutoAttack does)."""
    rows = np.arange(len(best_success))
    if restart:
        rows = rows[~best_success]
    return [rows[a:b] for a, b in _batches(len(rows), batch_size)]


def _batches(n, batch_size):
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _padded_size(n, batch_size, smallest=32):
    """The rows a compiled call runs for `n` examples: the smallest rung
    that holds them of a ladder from `batch_size` down, each rung three
    quarters of the one above (rounded up) and at least `smallest`. A
    remainder pays for at most a third more rows than it has, and each
    program compiles for at most about ten shapes.

    Examples:
        >>> [_padded_size(n, 500) for n in (500, 300, 250, 100, 1)]
        [500, 375, 282, 120, 39]
    """
    size = batch_size
    while True:
        smaller = -(-size * 3 // 4)
        if n > smaller or smaller < smallest or smaller == size:
            return size
        size = smaller


def _pad(array, size):
    """Pads the batch axis of `array` (at most `size` rows) to
    `_padded_size(len(array), size)` rows by repeating its rows, so the
    compiled attacks see few distinct shapes (no retracing per remainder).
    A backend that runs the attacks eagerly (torch) gets `array` as it is:
    padding would only add arithmetic."""
    if not _backend.COMPILES_PER_SHAPE:
        return array
    rows = _padded_size(len(array), size)
    if rows == len(array):
        return array
    return np.take(array, np.arange(rows) % len(array), axis=0)


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
    input_range = check_input_range(input_range)
    batch_size = check_integer("batch_size", batch_size)
    x, y = check_data(x, y, input_range)
    if len(x) == 0:
        raise ValueError("Argument `x` must hold at least one example. Received: 0")
    probe = x[: min(len(x), 8)]
    scoring = _scoring(model, loss, from_logits, probe)
    if isinstance(scoring.loss, str):
        classes = int(ops.shape(scoring.scores(probe))[-1])
        y = check_labels(y, classes)
    return x, y, input_range, scoring, batch_size


def num_classes(model, x, from_logits=None) -> int:
    """How many classes the classifier scores (a one-unit sigmoid: 2)."""
    x, _, _, scoring, _ = _setup(
        model, x, np.zeros(len(x), "int32"), None, "cross_entropy", from_logits, 8
    )
    return int(ops.shape(scoring.scores(x[:1]))[-1])
