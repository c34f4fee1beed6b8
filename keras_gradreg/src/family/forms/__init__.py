"""The family's training forms, one module each, and `get`.

`GradientRegularizer(form=...)` takes a form object, its shorthand string
or its config; `get` resolves them.
"""

from __future__ import annotations

import keras

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family.forms.base import (
    REGISTRY,
    Form,
    FormContext,
    PerturbingForm,
)
from keras_gradreg.src.family.forms.curvature import Curvature
from keras_gradreg.src.family.forms.finite_difference import FiniteDifference
from keras_gradreg.src.family.forms.gradalign import GradAlign
from keras_gradreg.src.family.forms.jacobian import Jacobian
from keras_gradreg.src.family.forms.llr import LLR
from keras_gradreg.src.family.forms.mart import MART
from keras_gradreg.src.family.forms.multistep import Multistep
from keras_gradreg.src.family.forms.penalty import Penalty
from keras_gradreg.src.family.forms.perturb import Perturb
from keras_gradreg.src.family.forms.single_step import FGSMRandomStart, NoisyFGSM
from keras_gradreg.src.family.forms.squared_penalty import SquaredPenalty
from keras_gradreg.src.family.forms.trades import TRADES
from keras_gradreg.src.family.forms.virtual import Virtual


@keras_gradreg_export("keras_gradreg.forms.get")
def get(identifier) -> Form:
    """The form an identifier names.

    Args:
        identifier: a `Form`, a shorthand string (`"penalty"`, `"perturb"`,
            `"finite_difference"`, `"multistep"`, `"virtual"`, or the name
            of any other `Form` subclass defined), or a config dict as
            `keras.saving.serialize_keras_object` writes it.

    Returns:
        The form object (a shorthand builds it with its defaults).

    Raises:
        ValueError: for anything else, naming what was received.

    Examples:
        >>> get("multistep") == Multistep()
        True
    """
    if isinstance(identifier, Form):
        return identifier
    if isinstance(identifier, str) and identifier in REGISTRY:
        return REGISTRY[identifier]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        form = keras.saving.deserialize_keras_object(identifier)
        if isinstance(form, Form):
            return form
    raise ValueError(
        f"Argument `form` must be one of {names()}, a `keras_gradreg.forms.Form` or "
        f"its config. Received: form={identifier!r}"
    )


def names() -> tuple:
    """The shorthands of every form defined, in definition order."""
    return tuple(REGISTRY)


__all__ = [
    "Curvature",
    "FGSMRandomStart",
    "FiniteDifference",
    "Form",
    "FormContext",
    "GradAlign",
    "Jacobian",
    "LLR",
    "MART",
    "PerturbingForm",
    "Multistep",
    "NoisyFGSM",
    "Penalty",
    "Perturb",
    "SquaredPenalty",
    "TRADES",
    "Virtual",
    "get",
    "names",
]
