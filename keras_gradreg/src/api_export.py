"""The one decorator that marks a name as public API.

It records the public path (for the docs' API-reference test) and registers
serializable classes (those with `get_config`) with Keras under the package
"keras_gradreg", so saved `.keras` files load without `custom_objects`.
"""

from __future__ import annotations

import inspect

import keras

#: Public path -> object, filled by `keras_gradreg_export`.
PUBLIC_API: dict = {}


def keras_gradreg_export(path: str):
    """Marks `symbol` as exported at `path` and registers serializable
    classes.

    Args:
        path: the public dotted name, e.g. "keras_gradreg.GradRegModel".

    Returns:
        A decorator returning the (registered) symbol unchanged.
    """

    def decorator(symbol):
        if inspect.isclass(symbol) and hasattr(symbol, "get_config"):
            symbol = keras.saving.register_keras_serializable(
                package="keras_gradreg", name=symbol.__name__
            )(symbol)
        PUBLIC_API[path] = symbol
        return symbol

    return decorator
