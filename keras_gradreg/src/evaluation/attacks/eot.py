"""Expectation over transformation (Athalye et al., 2018) for models that are
random at inference: the layers' random draws (dropout masks, noise) come
from Keras `SeedGenerator`s, whose states are set per draw, so a compiled
attack can average gradients over draws and every draw is reproducible.

On torch, Keras draws a layer's dropout mask from torch's global generator
when the layer was built without a `seed`: the draws still differ from one
call to the next, so the averages hold, but only seeded layers replay."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.training import backend as _backend

# Counter spacing between draws, so that a layer drawing several times in one
# call does not reuse the next draw's seeds.
_SPACING = 1000


def seed_states(model) -> list:
    """The state variables of the `SeedGenerator`s `model`'s layers draw
    from (empty for a deterministic model)."""
    variables = model.non_trainable_variables
    return [variables[i] for i in _keras_compat.layer_seed_positions(model)]


def draw_scope(model, states, salt, draw):
    """A `keras.StatelessScope` in which the model's variables keep their
    values and each seed generator starts from `[state_0, salt + draw *
    1000]` (so draw `draw` is the same wherever it is taken); the draws'
    state updates are discarded with the scope."""
    ids = {id(s) for s in states}
    mapping = [(v, v.value) for v in model.variables if id(v) not in ids]
    counter = ops.cast(salt, "int32") + ops.cast(draw, "int32") * _SPACING
    for state in states:
        first = ops.cast(ops.take(state.value, 0), "int32")
        mapping.append((state, ops.cast(ops.stack([first, counter]), state.dtype)))
    return keras.StatelessScope(state_mapping=mapping)


def expected_values_and_gradient(model, fn, x, samples, salt, first_draw):
    """For `fn(x) -> (values, scores)` with per-example `values`, the mean
    of `values` and of `d sum(values) / dx` over `samples` draws of the
    model's randomness (draws `first_draw`, ..., `first_draw + samples -
    1`), and the scores of the last draw (AutoAttack's `eot_iter`: the
    gradient averaged over draws, the prediction of the last).

    A model without seed generators is evaluated once when `samples` is 1.
    """
    states = seed_states(model)
    if samples == 1 and not states:
        return _backend.values_and_input_gradient(fn, x)

    def one(draw):
        with draw_scope(model, states, salt, first_draw + draw):
            return _backend.values_and_input_gradient(fn, x)

    values, scores, gradient = one(0)

    def body(draw, carry):
        total, _, gradients = carry
        v, s, g = one(draw)
        return total + v, s, gradients + g

    if samples > 1:
        values, scores, gradient = ops.fori_loop(
            1, samples, body, (values, scores, gradient)
        )
    return values / samples, scores, gradient / samples


def accuracy_over_draws(model, x, y, draws, seed=0, batch_size=500):
    """Per example, the fraction of `draws` draws of the model's randomness
    (`training=False`) that classify `x` as `y`: 0 or 1 for a deterministic
    model, where one draw is taken whatever `draws` says.

    Args:
        model: a classifier with one `(batch, classes)` output.
        x: inputs.
        y: integer labels.
        draws: draws per example, >= 1.
        seed: salt of the draws.
        batch_size: examples per call.

    Returns:
        A float array of shape `(len(x),)` with values in [0, 1].
    """
    from keras_gradreg.src.evaluation.attacks._data import predicted_classes

    states = seed_states(model)
    if not states:
        draws = 1
    correct = np.zeros(len(x), "float64")
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        for draw in range(draws):
            with draw_scope(model, states, seed, draw):
                scores = ops.convert_to_numpy(model(batch, training=False))
            labels = y[start : start + batch_size]
            correct[start : start + batch_size] += predicted_classes(scores) == labels
    return correct / draws
