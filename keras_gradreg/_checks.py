"""Argument checks shared across the library (errors name the argument and
the value received, as Keras's do)."""

from __future__ import annotations

import numbers

import numpy as np


def check_integer(name, value, minimum=1, *, allow_none=False, types=(int,)):
    """Returns `value` if it is an integer >= `minimum` (or None when
    `allow_none`).

    Booleans are refused although Python counts them as integers.

    Args:
        name: the argument's name, for the error.
        value: the value received.
        minimum: the smallest value accepted.
        allow_none: whether None is accepted too.
        types: the integer types accepted (e.g. `(int, np.integer)`).

    Raises:
        ValueError: naming the argument and the value received.
    """
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, types) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(
            f"Argument `{name}` must be {accepted}. Received: {name}={value!r}"
        )
    return value


def check_number(name, value, minimum=0.0, *, exclusive=False):
    """Returns `value` as a float if it is a real number (NumPy's too)
    >= `minimum` (> `minimum` when `exclusive`). Booleans are refused.

    Args:
        name: the argument's name, for the error.
        value: the value received.
        minimum: the bound.
        exclusive: whether `minimum` itself is refused.

    Raises:
        ValueError: naming the argument and the value received.
    """
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not number or value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        raise ValueError(
            f"Argument `{name}` must be a number {bound}. Received: {name}={value!r}"
        )
    return float(value)
