"""The serializable configuration of one member of the family and its form."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Sequence, Union

import numpy as np

from keras_gradreg.api_export import keras_gradreg_export
from keras_gradreg.norms import Norm, canonical_norm, dual_exponent

FORMS = ("penalty", "perturb", "finite_difference", "multistep")


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
    - `"multistep"`: `L_adv = L(x + r_k)`, the inner max solved by `steps`
      steps of projected steepest ascent (the PGD adversarial training of
      Madry et al., 2018): `r_{t+1} = clip_range(Proj_sigma(r_t + step_size
      * d_p(dL/dx at x + r_t)))`, from `r_0 = 0` or a random point of the
      ball, with `r_k` held constant in the outer gradient (Danskin's
      theorem; first derivatives only). With `steps=1` and no random start
      it is exactly the perturb form.

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
            (perturb, finite-difference and multistep forms).
        inputs_to_regularize: optional list of the inputs to differentiate:
            keys of a dict input or positions in a list input. By default
            every floating-point input; integer inputs are never
            differentiated.
        steps: ascent steps k >= 1 of the multistep form.
        step_size: the length of one multistep step in `norm`; default
            `2.5 * sigma / steps` (Madry et al.), read from the current
            sigma.
        random_start: whether the multistep form starts at a random point
            of the ball (uniform in the linf cube; a Gaussian or, for l1,
            Laplace direction at a uniform radius otherwise) rather than at
            x.
        l1_sparsity: for `norm="l1"` in the multistep form, the quantile of
            |g| above which coordinates move in one step (the sparse step of
            Tramer & Boneh, 2019), in [0, 1).
        virtual: the label-free member (virtual adversarial training,
            Miyato et al., 2018): `L(x + r)` is replaced by `KL(p(x) ||
            p(x + r))` with `p(x)` constant, r* taken along the dominant
            eigenvector of its Hessian by power iteration, and the
            objective is `L(x) + virtual_weight * KL` over every example,
            labeled or not (give unlabeled ones sample weight 0). Perturb
            form only.
        xi: the power iteration's finite-difference radius (> 0), in the
            inputs' units. It must lift `x + xi d` (d a unit vector) above
            float32 round-off, about `6e-8 |x|` per coordinate: Miyato et
            al.'s 1e-6 does not on 784-pixel images in [0, 1] (the
            direction is then mostly noise), so the default is 1e-2.
        power_iterations: power-iteration steps (>= 1; Miyato et al.: 1).
        virtual_weight: the weight of the divergence term (>= 0).
        labeled_rows: the layout of Miyato et al.'s semi-supervised batches:
            the first `labeled_rows` rows of every training batch are
            labeled and the rest unlabeled, and the two groups run through
            the network in passes of their own (each normalized by its own
            batch statistics). The loss and the gradient term see only the
            labeled rows; the label-free member's divergence only the
            unlabeled ones; other members ignore the unlabeled rows.
            `SemiSupervisedBatches(passes="separate")` makes such batches.
            None (default): every row in one pass.
        feature_mask: optional weights `w >= 0` on the input coordinates: a
            number or array broadcastable to one example's input (0/1 to
            freeze features), or for several inputs a dict from input name
            (dict inputs) or position (list inputs) to one, missing inputs
            weighing 1. The ball becomes `{r : ||r / w||_p <= sigma}` (r = 0
            where w = 0): every form then uses the weighted gradient `w * g`
            (penalty `sigma ||w g||_q`, worst case `w * r*(w g)`), so a
            number per input is a per-input radius `w * sigma`.
        share_noise: whether every forward pass of a training step draws
            the random noise (dropout masks) of the clean pass, so that r*
            is the worst case of the network being trained, the finite
            difference compares one network with itself and the label-free
            divergence is 0 at r = 0 (default). False draws fresh noise in
            each pass, as training code that calls the model twice does
            (Neural Structured Learning, most FGSM training loops): the
            perturb and multistep forms only.

    Examples:
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
    steps: int = 7
    step_size: Optional[float] = None
    random_start: bool = True
    l1_sparsity: float = 0.95
    feature_mask: Optional[object] = None
    virtual: bool = False
    xi: float = 1e-2
    power_iterations: int = 1
    virtual_weight: float = 1.0
    labeled_rows: Optional[int] = None
    share_noise: bool = True

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
        integral = isinstance(self.steps, numbers.Integral)
        if isinstance(self.steps, bool) or not integral or self.steps < 1:
            raise ValueError(
                f"Argument `steps` must be an integer >= 1. Received: steps={self.steps!r}"
            )
        set_(self, "steps", int(self.steps))
        if self.step_size is not None:
            set_(
                self,
                "step_size",
                _check_number(
                    "step_size", self.step_size, low=0.0, low_inclusive=False
                ),
            )
        _check_bool("random_start", self.random_start)
        set_(
            self,
            "l1_sparsity",
            _check_number("l1_sparsity", self.l1_sparsity, low=0.0, high=1.0),
        )
        set_(self, "feature_mask", _check_feature_mask(self.feature_mask))
        _check_bool("virtual", self.virtual)
        if self.virtual and self.form != "perturb":
            raise ValueError(
                "The label-free member (virtual=True) trains with form='perturb': "
                "its divergence has zero gradient at r = 0, so the first-order "
                "penalty and finite difference vanish, and its extra steps are "
                "`power_iterations` rather than multistep ascent. "
                f"Received: form={self.form!r}"
            )
        set_(self, "xi", _check_number("xi", self.xi, low=0.0, low_inclusive=False))
        power = self.power_iterations
        if (
            isinstance(power, bool)
            or not isinstance(power, numbers.Integral)
            or power < 1
        ):
            raise ValueError(
                "Argument `power_iterations` must be an integer >= 1. "
                f"Received: power_iterations={power!r}"
            )
        set_(
            self,
            "virtual_weight",
            _check_number("virtual_weight", self.virtual_weight, low=0.0),
        )
        rows = self.labeled_rows
        if rows is not None and (
            isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 1
        ):
            raise ValueError(
                "Argument `labeled_rows` must be None or an integer >= 1. "
                f"Received: labeled_rows={rows!r}"
            )
        _check_bool("share_noise", self.share_noise)
        if not self.share_noise and (self.form == "finite_difference" or self.virtual):
            raise ValueError(
                "share_noise=False applies to the perturb and multistep forms: the "
                "finite difference and the label-free divergence compare the "
                "network with itself, which fresh dropout masks break (the "
                "difference then grows like sigma / h). Received: "
                f"share_noise=False with form={self.form!r}, virtual={self.virtual}"
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
        if isinstance(self.feature_mask, dict):
            config["feature_mask"] = dict(self.feature_mask)  # asdict copies it
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


def saved_config(config: dict) -> dict:
    """A saved regularizer config as today's `GradientRegularizer` reads it.

    Models saved before `share_noise` existed trained their perturbed and
    multistep passes with fresh noise draws, which is `share_noise=False`;
    read without the key, they would silently take today's default (True)
    and train another objective when training goes on (a stage 2, a
    resumed search). Forms where fresh draws are refused keep the default.

    Args:
        config: a `GradRegModel` or `GradientRegularizer` config from a file.

    Returns:
        The config, with `share_noise` added where it was missing.
    """
    fresh_before = config.get("form") in ("perturb", "multistep")
    if "share_noise" in config or not fresh_before or config.get("virtual"):
        return config
    return {**config, "share_noise": False}


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be True or False. Received: {name}={value!r}"
        )


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


def _frozen(values):
    """Nested lists as nested tuples (hashable, comparable, immutable)."""
    return tuple(_frozen(v) for v in values) if isinstance(values, list) else values


def _check_mask_value(value, where):
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        array = None
    if array is None or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(
            "Argument `feature_mask` must hold finite weights >= 0 (a number or "
            "an array-like per input). Received: "
            f"feature_mask{where}={value!r}"
        )
    return float(array) if array.ndim == 0 else _frozen(array.tolist())


def _check_feature_mask(mask):
    if mask is None:
        return None
    if isinstance(mask, dict):
        if not mask or not all(
            isinstance(k, (str, int)) and not isinstance(k, bool) for k in mask
        ):
            raise ValueError(
                "A dict `feature_mask` maps input names (str) or positions "
                f"(int) to weights. Received: feature_mask={mask!r}"
            )
        return {k: _check_mask_value(v, f"[{k!r}]") for k, v in mask.items()}
    frozen = _check_mask_value(mask, "")
    if not np.any(np.asarray(frozen)):
        raise ValueError(
            "Argument `feature_mask` is zero everywhere: nothing would be "
            f"perturbed or penalized. Received: feature_mask={mask!r}"
        )
    return frozen


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
