"""The serializable configuration of one member of the family and its form."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

from keras_gradreg.api_export import keras_gradreg_export
from keras_gradreg.norms import Norm, canonical_norm, dual_exponent

FORMS = ("penalty", "perturb", "finite_difference")


def _check_number(name, value, *, low=None, low_inclusive=True, high=None):
    """Raises a ValueError naming `name` unless `value` is a finite number in
    the given range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value < high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{name} {'>=' if low_inclusive else '>'} {low}")
        if high is not None:
            bounds.append(f"{name} < {high}")
        rule = " and ".join(bounds) or "a finite number"
        raise ValueError(
            f"Argument `{name}` must be a finite number with {rule}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


@keras_gradreg_export("keras_gradreg.GradientRegularizer")
@dataclasses.dataclass(frozen=True)
class GradientRegularizer:
    """One member of the unified gradient-regularization family, and how to
    train it.

    The family trains `min_theta mean_i max_{||r_i||_p <= sigma} L(x_i + r_i)`.
    To first order the inner max is `L(x) + sigma * ||dL/dx||_q` with
    `1/p + 1/q = 1`. **`norm` names the perturbation (threat-model) norm p**,
    not the penalized gradient norm q:

    | `norm` | penalized gradient norm | worst-case r*                      |
    |--------|-------------------------|------------------------------------|
    | "linf" | ||g||_1                 | sigma * sign(g) (FGSM)             |
    | "l2"   | ||g||_2                 | sigma * g / ||g||_2                |
    | "l1"   | ||g||_inf               | sigma on the largest |g_i|         |
    | p > 1  | ||g||_{p/(p-1)}         | sigma sign(g)|g|^(q-1)/||g||_q^(q-1)|

    With `L_adv` the adversarial term of the chosen `form`, each example's
    objective is `alpha * L(x) + (1 - alpha) * L_adv`:

    - `"penalty"`: `L_adv = L(x) + sigma * ||g||_q`, differentiated exactly
      (double backpropagation).
    - `"perturb"`: `L_adv = L(clip(x + r*))`, with r* held constant (first
      derivatives only). `norm="linf", alpha=0.5` is the adversarial training
      of Goodfellow et al. (2015).
    - `"finite_difference"`: `L_adv = L(x) + sigma * (L(x + h d) - L(x)) / h`
      with `d = r* / sigma` held constant and `h = fd_step`: the penalty's
      directional derivative by finite differences, first derivatives only.
      With `h = sigma` it is exactly the perturb form.

    Instances are immutable; use `replace` to derive a changed copy, and
    assign it to `model.regularizer`.

    Args:
        norm: the perturbation norm p: "linf", "l2", "l1" or a number >= 1.
        sigma: the radius of the perturbation ball, >= 0. `0` trains the
            plain model.
        form: "penalty", "perturb" or "finite_difference".
        alpha: weight of the clean loss, in [0, 1).
        fd_step: the finite-difference step h (> 0), used by
            "finite_difference" only.
        input_range: optional `(low, high)`: `x + r*` is clipped to it
            (perturb and finite-difference forms).
        inputs_to_regularize: optional list of the inputs to differentiate:
            keys of a dict input or positions in a list input. By default
            every floating-point input; integer inputs are never
            differentiated.

    Example:
        >>> reg = GradientRegularizer(norm="l2", sigma=0.1)
        >>> reg.dual_order
        2.0
        >>> reg.replace(sigma=0.3).sigma
        0.3
    """

    norm: Norm = "l2"
    sigma: float = 0.1
    form: str = "penalty"
    alpha: float = 0.0
    fd_step: float = 0.01
    input_range: Optional[tuple[float, float]] = None
    inputs_to_regularize: Optional[tuple[Union[str, int], ...]] = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "norm", canonical_norm(self.norm))
        set_(self, "sigma", _check_number("sigma", self.sigma, low=0.0))
        if self.form not in FORMS:
            raise ValueError(
                f"Argument `form` must be one of {FORMS}. Received: form={self.form!r}"
            )
        set_(self, "alpha", _check_number("alpha", self.alpha, low=0.0, high=1.0))
        set_(
            self,
            "fd_step",
            _check_number("fd_step", self.fd_step, low=0.0, low_inclusive=False),
        )
        set_(self, "input_range", _check_input_range(self.input_range))
        set_(
            self,
            "inputs_to_regularize",
            _check_inputs_to_regularize(self.inputs_to_regularize),
        )

    @property
    def dual_order(self) -> float:
        """q, the order of the penalized gradient norm (1/p + 1/q = 1)."""
        return dual_exponent(self.norm)

    @property
    def active(self) -> bool:
        """False when sigma is 0: the model then trains exactly as plain
        Keras."""
        return self.sigma > 0.0

    def replace(self, **changes) -> GradientRegularizer:
        """Returns a copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def get_config(self) -> dict:
        config = dataclasses.asdict(self)
        if self.input_range is not None:
            config["input_range"] = list(self.input_range)
        if self.inputs_to_regularize is not None:
            config["inputs_to_regularize"] = list(self.inputs_to_regularize)
        return config

    @classmethod
    def from_config(cls, config: dict) -> GradientRegularizer:
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"A regularizer config takes the keys {list(REGULARIZER_ARGUMENTS)}. "
                f"Received unknown keys: {unknown}"
            )
        return cls(**config)


def _check_input_range(input_range):
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


def _check_inputs_to_regularize(inputs):
    if inputs is None:
        return None
    if isinstance(inputs, (str, int)):
        inputs = [inputs]
    inputs = tuple(inputs)
    if not inputs or not all(
        isinstance(k, (str, int)) and not isinstance(k, bool) for k in inputs
    ):
        raise ValueError(
            "Argument `inputs_to_regularize` must be None or a non-empty list "
            "of input names (str) or positions (int). "
            f"Received: inputs_to_regularize={inputs!r}"
        )
    return inputs


REGULARIZER_ARGUMENTS = tuple(f.name for f in dataclasses.fields(GradientRegularizer))
