"""Argument checks shared across the library: every error names the
argument and the value received, as Keras's do
(``Argument `x` must be ... Received: x=...``)."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export


def check_integer(
    name, value, minimum=1, *, allow_none=False, types=(numbers.Integral,)
):
    """Returns `value` as an int if it is an integer >= `minimum` (or None
    when `allow_none`).

    Booleans are refused although Python counts them as integers.

    Args:
        name: the argument's name, for the error.
        value: the value received.
        minimum: the smallest value accepted.
        allow_none: whether None is accepted too.
        types: the integer types accepted (default: Python's and NumPy's).

    Raises:
        ValueError: naming the argument and the value received.
    """
    if allow_none and value is None:
        return None
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, types)
        or value < minimum
    ):
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(
            f"Argument `{name}` must be {accepted}. Received: {name}={value!r}"
        )
    return int(value)


def check_number(
    name, value, minimum=0.0, *, exclusive=False, below=None, maximum=None, finite=False
):
    """Returns `value` as a float if it is a real number (NumPy's too)
    >= `minimum` (> `minimum` when `exclusive`) and < `below`. Booleans
    and NaN are refused.

    Args:
        name: the argument's name, for the error.
        value: the value received.
        minimum: the lower bound, or None for none.
        exclusive: whether `minimum` itself is refused.
        below: an upper bound, itself refused, or None.
        maximum: an upper bound, itself accepted, or None.
        finite: whether infinities are refused too.

    Raises:
        ValueError: naming the argument and the value received.
    """
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    ok = number and not math.isnan(value)
    ok = ok and not (finite and math.isinf(value))
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok and below is not None:
        ok = value < below
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"> {minimum:g}" if exclusive else f">= {minimum:g}")
        if below is not None:
            bounds.append(f"< {below:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        kind = "a finite number" if finite else "a number"
        rule = " ".join([kind, " and ".join(bounds)]).strip()
        raise ValueError(
            f"Argument `{name}` must be {rule}. Received: {name}={value!r}"
        )
    return float(value)


def check_bool(name, value):
    """Returns `value` if it is True or False (1, 0 and NumPy booleans are
    refused: a typo should not pass for a choice).

    Raises:
        ValueError: naming the argument and the value received.
    """
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be True or False. Received: {name}={value!r}"
        )
    return value


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`.

    Raises:
        ValueError: naming the argument, the choices and the value received.
    """
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {tuple(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_eps(eps):
    """Returns `eps` as a float if it is a finite number >= 0.

    Raises:
        ValueError: naming `eps` and the value received.
    """
    return check_number("eps", eps, 0.0, finite=True)


def check_input_range(input_range):
    """Returns `(low, high)` as floats, or None.

    Raises:
        ValueError: unless it is None or a pair of finite numbers with
            low < high, naming the value received.
    """
    if input_range is None:
        return None
    valid = isinstance(input_range, Sequence) and len(input_range) == 2
    if valid:
        try:
            low, high = (float(v) for v in input_range)
        except (TypeError, ValueError):
            valid = False
        else:
            valid = math.isfinite(low) and math.isfinite(high) and low < high
    if not valid:
        raise ValueError(
            "Argument `input_range` must be None or a pair (low, high) of "
            f"finite numbers with low < high. Received: input_range={input_range!r}"
        )
    return (low, high)


def check_data(x, y, input_range):
    """Validates the data of an attack or an evaluation: one finite float
    array (inside `input_range` unless None) and one integer label per
    example; returns them as NumPy arrays."""
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


@keras_gradreg_export("keras_gradreg.attacks.labels_of")
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
