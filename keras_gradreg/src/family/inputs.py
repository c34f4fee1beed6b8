"""The inputs the family differentiates: which leaves of a model's input
are regularized, how a perturbation is put back into them, and the
`feature_mask` weights on each.

A model's input may be a tensor, a list or a dict; integer inputs (token
ids) cannot be differentiated and are skipped unless named. Everything here
is backend-agnostic (`keras.ops`); the per-backend train steps and
`keras_gradreg.objective` share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gradreg.src import keras_compat as _keras_compat

if TYPE_CHECKING:
    from keras_gradreg.src.family.regularizer import GradientRegularizer


class InputSelection(NamedTuple):
    """The differentiable leaves of a model's input and how to put them
    back."""

    leaves: list
    positions: list  # keys (dict inputs) or indices (list inputs); [None] for a tensor

    def rebuild(self, x, new_leaves):
        """Returns `x` with the selected leaves replaced by `new_leaves`."""
        if self.positions == [None]:
            return new_leaves[0]
        if isinstance(x, dict):
            out = dict(x)
        else:
            out = list(x)
        for position, leaf in zip(self.positions, new_leaves):
            out[position] = leaf
        return out if isinstance(x, (dict, list)) else tuple(out)


def _is_float(tensor) -> bool:
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(tensor.dtype))


def select_inputs(x, inputs_to_regularize=None) -> InputSelection:
    """Chooses the inputs whose gradient the family penalizes.

    By default every floating-point input (integer inputs such as token ids
    are skipped); `inputs_to_regularize` lists dict keys or list positions.

    Raises:
        ValueError: if a named input does not exist or is not floating-point,
            or if no input is differentiable.
    """
    if isinstance(x, dict):
        candidates = list(x.items())
    elif isinstance(x, (list, tuple)):
        candidates = list(enumerate(x))
    else:
        candidates = [(None, x)]
    if inputs_to_regularize is None:
        chosen = [(k, t) for k, t in candidates if t is not None and _is_float(t)]
    else:
        # A single tensor input is position 0.
        available = {0 if k is None else k: (k, t) for k, t in candidates}
        chosen = []
        for key in inputs_to_regularize:
            if key not in available:
                raise ValueError(
                    "Argument `inputs_to_regularize` names an input the model "
                    f"does not receive. Available: {list(available)}. "
                    f"Received: inputs_to_regularize={list(inputs_to_regularize)}"
                )
            position, tensor = available[key]
            if not _is_float(tensor):
                raise ValueError(
                    f"Input {key!r} has dtype {tensor.dtype}; only "
                    "floating-point inputs can be differentiated. Received: "
                    f"inputs_to_regularize={list(inputs_to_regularize)}"
                )
            chosen.append((position, tensor))
    if not chosen:
        raise ValueError(
            "GradRegModel found no floating-point input to differentiate: the "
            "gradient penalty needs at least one. Cast continuous inputs to "
            "float, or name them with `inputs_to_regularize`. Received input "
            f"dtypes: {[str(t.dtype) for _, t in candidates if t is not None]}"
        )
    return InputSelection([t for _, t in chosen], [k for k, _ in chosen])


def no_gradient_error(name, inputs_to_regularize) -> ValueError:
    """The error for a regularized input with no differentiable path to the
    outputs (the same message on every backend)."""
    return ValueError(
        f"Input {name!r} has no differentiable path to the model's outputs "
        "(every path runs through an integer tensor, e.g. a Discretization "
        "layer): its gradient is zero by construction and the family's "
        "penalty would silently do nothing. List the inputs to differentiate "
        "with `inputs_to_regularize`. Received: "
        f"inputs_to_regularize={inputs_to_regularize!r}"
    )


def check_input_gradients(gradients, selection, inputs_to_regularize):
    """Raises `no_gradient_error` for an input whose gradient the backend
    reports as unconnected (None)."""
    for gradient, position in zip(gradients, selection.positions):
        if gradient is None:
            name = 0 if position is None else position
            raise no_gradient_error(name, inputs_to_regularize)


def check_differentiable_inputs(model, regularizer):
    """Refuses, before training, a functional model whose regularized float
    input has no floating-point path to an output (on every backend; the
    TensorFlow and torch steps also catch it at run time for subclassed
    models)."""
    try:
        structure = model.input  # functional models only
    except (AttributeError, ValueError):
        return
    if not isinstance(getattr(model, "outputs", None), list):
        return
    if isinstance(structure, dict):
        named = list(structure.items())
    elif isinstance(structure, (list, tuple)):
        named = list(enumerate(structure))
    else:
        named = [(0, structure)]
    wanted = regularizer.inputs_to_regularize
    chosen = [
        (name, t)
        for name, t in named
        if (name in wanted if wanted is not None else _is_float(t))
    ]
    dead = _keras_compat.inputs_without_float_path(model, [t for _, t in chosen])
    for name, tensor in chosen:
        if any(tensor is d for d in dead):
            raise no_gradient_error(name, wanted)


def perturbed_leaves(selection, deltas, input_range):
    """`clip(leaf + delta)` for each selected leaf."""
    moved = [leaf + delta for leaf, delta in zip(selection.leaves, deltas)]
    if input_range is not None:
        low, high = input_range
        moved = [ops.clip(leaf, low, high) for leaf in moved]
    return moved


def perturb_inputs(x, selection, deltas, input_range):
    """Returns `x` with `clip(leaf + delta)` for each selected leaf."""
    return selection.rebuild(x, perturbed_leaves(selection, deltas, input_range))


def weighted(deltas, weights):
    """`w * r` per leaf (`deltas` unchanged without a feature mask)."""
    if weights is None:
        return deltas
    return [d * ops.cast(w, d.dtype) for d, w in zip(deltas, weights)]


def feature_weights(regularizer: GradientRegularizer, selection: InputSelection):
    """The `feature_mask` as one weight tensor per regularized input
    (broadcastable to one example), or None without a mask.

    Raises:
        ValueError: for a mask naming an input that is not regularized, an
            undivided mask for several inputs, a mask that does not
            broadcast to its input, or one that is zero on every input.
    """
    mask = regularizer.feature_mask
    if mask is None:
        return None
    names = [0 if p is None else p for p in selection.positions]
    if isinstance(mask, dict):
        given = {str(k): v for k, v in mask.items()}  # JSON turns 0 into "0"
        unknown = sorted(set(given) - {str(n) for n in names})
        if unknown:
            raise ValueError(
                "Argument `feature_mask` names inputs that are not regularized. "
                f"Regularized inputs: {names}. Received: feature_mask keys {unknown}"
            )
        values = [given.get(str(n), 1.0) for n in names]
    elif len(names) > 1:
        raise ValueError(
            "The model has several regularized inputs: pass `feature_mask` as a "
            f"dict from input ({names}) to weights. Received: feature_mask of "
            f"shape {np.shape(mask)}"
        )
    else:
        values = [mask]
    weights = []
    for name, value, leaf in zip(names, values, selection.leaves):
        array = np.asarray(value, dtype="float32")
        example = tuple(leaf.shape[1:])
        try:
            shape = np.broadcast_shapes(
                array.shape, tuple(1 if d is None else d for d in example)
            )
        except ValueError:
            shape = None
        if shape is None or len(shape) > len(example):
            raise ValueError(
                f"`feature_mask` for input {name!r} must broadcast to one "
                f"example's shape {example}. Received: feature_mask of shape "
                f"{array.shape}"
            )
        weights.append(ops.cast(array, leaf.dtype))
    if not any(np.any(np.asarray(v, dtype="float32")) for v in values):
        raise ValueError(
            "Argument `feature_mask` is zero on every regularized input: nothing "
            f"would be perturbed or penalized. Received: feature_mask={mask!r}"
        )
    return weights


def check_training_range(regularizer, x) -> None:
    """Refuses training inputs outside `regularizer.input_range`.

    The perturbed inputs are clipped to the range, so inputs left outside
    it (images at 0-255 with `input_range=(0, 1)`) would train on clipped
    garbage without a word. Arrays in memory are checked whole; a
    `tf.data.Dataset` or a `keras.utils.PyDataset` on its first batch;
    other iterables (generators) cannot be read without consuming them and
    are not checked.

    Raises:
        ValueError: naming `x`, the range and the values received.
    """
    if not (regularizer.active and regularizer.input_range is not None):
        return
    batch = _first_batch(x)
    if batch is None:
        return
    leaves = select_inputs(batch, regularizer.inputs_to_regularize).leaves
    values = [np.asarray(keras.ops.convert_to_numpy(t)) for t in leaves]
    values = [v for v in values if v.size]
    if not values:
        return
    low, high = regularizer.input_range
    least = min(float(v.min()) for v in values)
    most = max(float(v.max()) for v in values)
    if least < low or most > high:
        raise ValueError(
            f"Argument `x` must lie in input_range={regularizer.input_range}: the "
            "perturbed inputs are clipped to it, so training would see clipped "
            "inputs. Rescale the inputs or pass the range they use. Received: "
            f"x in [{least:g}, {most:g}]"
        )


def _first_batch(x):
    """The inputs of `x` to check: `x` itself for arrays, the first batch's
    inputs for a dataset, or None when they cannot be read cheaply."""
    if x is None:
        return None
    if isinstance(x, keras.utils.PyDataset):
        return keras.utils.unpack_x_y_sample_weight(x[0])[0] if len(x) else None
    if type(x).__module__.startswith("tensorflow") and hasattr(x, "take"):
        for element in x.take(1):
            return keras.utils.unpack_x_y_sample_weight(element)[0]
        return None
    leaves = keras.tree.flatten(x)
    if leaves and all(hasattr(t, "shape") and hasattr(t, "dtype") for t in leaves):
        return x
    return None
