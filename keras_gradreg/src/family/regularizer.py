"""The serializable configuration of one member of the family: its norm,
radius and form, and what every form shares."""

from __future__ import annotations

import json
import warnings
from typing import Optional

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import (
    check_bool,
    check_input_range,
    check_integer,
    check_number,
)
from keras_gradreg.src.family import forms
from keras_gradreg.src.family.norms import canonical_norm, dual_exponent

#: The shorthands of the forms defined at import.
FORMS = forms.names()

#: What every form shares, with its default.
SHARED_ARGUMENTS = {
    "norm": "l2",
    "sigma": 0.1,
    "form": "penalty",
    "alpha": 0.0,
    "input_range": None,
    "inputs_to_regularize": None,
    "feature_mask": None,
    "labeled_rows": None,
}

#: 0.1.0's keyword arguments of the forms, with the defaults that version
#: wrote into every saved config whatever the form. A value other than
#: its default goes to the form that takes it (`Form.argument_names`,
#: `Form.aliases`); `virtual=True` names the `Virtual` form.
FORM_SHORTHANDS = {
    "fd_step": 0.01,
    "steps": 7,
    "step_size": None,
    "random_start": True,
    "l1_sparsity": 0.95,
    "share_noise": True,
    "virtual": False,
    "xi": 1e-2,
    "power_iterations": 1,
    "virtual_weight": 1.0,
}

REGULARIZER_ARGUMENTS = (*SHARED_ARGUMENTS, *FORM_SHORTHANDS)


def _form_argument(form_class, name):
    """The name under which `form_class` takes 0.1.0's argument `name`, or
    None when it does not take it."""
    name = form_class.aliases.get(name, name)
    return name if name in form_class.argument_names() else None


def _resolve_form(form, shorthands: dict) -> forms.Form:
    """The form that `form` and 0.1.0's separate arguments name together."""
    virtual = shorthands.pop("virtual", False)
    check_bool("virtual", virtual)
    if virtual:
        if form not in (None, "perturb", "virtual"):
            raise ValueError(
                "The label-free member (virtual=True) is the form 'virtual', "
                "which 0.1.0 spelled virtual=True with form='perturb'. "
                f"Received: form={form!r}"
            )
        if shorthands.get("share_noise", True) is not True:
            raise ValueError(
                "The label-free member's divergence compares the network with "
                "itself, which fresh dropout masks break: it always shares them. "
                f"Received: share_noise={shorthands['share_noise']!r} with "
                "virtual=True"
            )
        shorthands.pop("share_noise", None)
        form = "virtual"
    form = forms.get("penalty" if form is None else form)
    given, spelled = {}, {}
    for name, value in shorthands.items():
        target = _form_argument(type(form), name)
        if target is not None:
            given[target], spelled[target] = value, name
        elif name == "share_noise" and value is False and form.replays_noise:
            raise ValueError(
                f"share_noise=False applies to the forms that take it ({takers_of(name)}): "
                f"form={form.name!r} compares the network with itself, which fresh "
                "dropout masks break. Received: share_noise=False with "
                f"form={form.name!r}"
            )
        elif not _is_default(name, value):
            # 0.1.0 took every form's arguments whatever the form: programs
            # that pass them to a form without them still run, and are told.
            warnings.warn(
                f"Argument `{name}` belongs to the form(s) {takers_of(name)} and does "
                f"nothing with form={form.name!r}. Received: {name}={value!r}",
                UserWarning,
                stacklevel=4,
            )
    return _replace_form(form, given, spelled) if given else form


def takers_of(name) -> list:
    """The shorthands of the forms that take 0.1.0's argument `name`."""
    return [n for n, c in forms.REGISTRY.items() if _form_argument(c, name)]


def _replace_form(form, given: dict, spelled: dict):
    """`form.replace(**given)`, its errors naming each argument as the
    caller spelled it (0.1.0's `virtual_weight` for `Virtual`'s `weight`)."""
    try:
        return form.replace(**given)
    except ValueError as error:
        message = str(error)
        for target, name in spelled.items():
            if name != target:
                message = message.replace(f"`{target}`", f"`{name}`")
                message = message.replace(f" {target}=", f" {name}=")
        raise ValueError(message) from None


def _is_default(name, value) -> bool:
    default = FORM_SHORTHANDS[name]
    return value is default or (type(value) is type(default) and value == default)


@keras_gradreg_export("keras_gradreg.GradientRegularizer")
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

    The `form` (a `keras_gradreg.forms.Form`) says how the inner max is
    trained: `Penalty` (the expansion, differentiated exactly), `Perturb`
    (the first-order worst case, FGSM's generalization), `FiniteDifference`,
    `Multistep` (projected ascent, PGD training), `Virtual` (the label-free
    member), or a later member of the family (`SquaredPenalty`,
    `FGSMRandomStart`, `NoisyFGSM`, `GradAlign`, `Curvature`, `Jacobian`,
    `TRADES`). With `L_adv` its adversarial term, each example's objective
    is `alpha * L(x) + (1 - alpha) * L_adv` (see each form for how it uses
    alpha).

    A string names a form with its defaults (`form="multistep"`), and the
    forms' arguments may be given here by name as 0.1.0 took them
    (`form="multistep", steps=10`; `fd_step`, `virtual=True`,
    `virtual_weight`): they go to the form. Instances are immutable; use
    `replace` to derive a changed copy and assign it to
    `model.regularizer`. The form's arguments read through the regularizer
    (`reg.steps` is `reg.form.steps`).

    Args:
        norm: the perturbation norm p: "linf", "l2", "l1" or a number >= 1.
        sigma: the radius of the perturbation ball, >= 0. `0` trains the
            plain model.
        form: a `Form`, its shorthand (default "penalty") or its config.
        alpha: weight of the clean loss, in [0, 1).
        input_range: optional `(low, high)`: `x + r` is clipped to it in
            every form that moves the inputs, and `fit` refuses inputs
            outside it.
        inputs_to_regularize: optional list of the inputs to differentiate:
            keys of a dict input or positions in a list input. By default
            every floating-point input; integer inputs are never
            differentiated.
        feature_mask: optional weights `w >= 0` on the input coordinates: a
            number or array broadcastable to one example's input (0/1 to
            freeze features), or for several inputs a dict from input name
            (dict inputs) or position (list inputs) to one, missing inputs
            weighing 1. The ball becomes `{r : ||r / w||_p <= sigma}` (r = 0
            where w = 0): every form then uses the weighted gradient `w * g`
            (penalty `sigma ||w g||_q`, worst case `w * r*(w g)`), so a
            number per input is a per-input radius `w * sigma`.
        labeled_rows: the layout of Miyato et al.'s semi-supervised batches:
            the first `labeled_rows` rows of every training batch are
            labeled and the rest unlabeled, and the two groups run through
            the network in passes of their own (each normalized by its own
            batch statistics). The loss and the gradient term see only the
            labeled rows; the label-free member's divergence only the
            unlabeled ones; other members ignore the unlabeled rows.
            `SemiSupervisedBatches(passes="separate")` makes such batches.
            None (default): every row in one pass.
        **form_arguments: 0.1.0's names for the form's arguments (`fd_step`,
            `steps`, `step_size`, `random_start`, `l1_sparsity`,
            `share_noise`, `virtual`, `xi`, `power_iterations`,
            `virtual_weight`).

    Raises:
        ValueError: naming the argument and the value received, for a bad
            value or a form argument the form does not take.

    Examples:
        >>> reg = GradientRegularizer(norm="l2", sigma=0.1)
        >>> reg.dual_order
        2.0
        >>> reg.replace(sigma=0.3).sigma
        0.3
        >>> GradientRegularizer(form="multistep", steps=3).form
        Multistep(steps=3, step_size=None, random_start=True, l1_sparsity=0.95, clean_metrics=True, share_noise=True)
    """

    __slots__ = tuple(SHARED_ARGUMENTS)

    def __init__(
        self,
        norm="l2",
        sigma: float = 0.1,
        form=None,
        alpha: float = 0.0,
        input_range: Optional[tuple] = None,
        inputs_to_regularize=None,
        feature_mask=None,
        labeled_rows: Optional[int] = None,
        **form_arguments,
    ):
        unknown = sorted(set(form_arguments) - set(FORM_SHORTHANDS))
        if unknown:
            raise ValueError(
                f"A regularizer takes the arguments {list(REGULARIZER_ARGUMENTS)}. "
                f"Received unknown keys: {unknown}"
            )
        set_ = object.__setattr__
        set_(self, "norm", canonical_norm(norm))
        set_(self, "sigma", check_number("sigma", sigma, 0.0, finite=True))
        set_(self, "form", _resolve_form(form, dict(form_arguments)))
        set_(self, "alpha", check_number("alpha", alpha, 0.0, below=1.0))
        set_(self, "input_range", check_input_range(input_range))
        set_(
            self,
            "inputs_to_regularize",
            _check_inputs_to_regularize(inputs_to_regularize),
        )
        set_(self, "feature_mask", _check_feature_mask(feature_mask))
        set_(
            self,
            "labeled_rows",
            check_integer("labeled_rows", labeled_rows, allow_none=True),
        )
        self.form.check(self)

    def __setattr__(self, name, value):
        raise AttributeError(
            f"A GradientRegularizer is immutable: use `replace({name}=...)`. "
            f"Received: {name}={value!r}"
        )

    def __getattr__(self, name):
        # The form's arguments read through the regularizer, under 0.1.0's
        # names too (`reg.steps`, `reg.fd_step`, `reg.virtual`).
        if name.startswith("__") or name in SHARED_ARGUMENTS:
            raise AttributeError(name)
        form = object.__getattribute__(self, "form")
        if name == "virtual":
            return form.label_free
        attribute = type(form).aliases.get(name, name)
        if attribute in type(form).argument_names():
            return getattr(form, attribute)
        raise AttributeError(
            f"{type(form).__name__} has no argument `{name}` "
            f"(it takes {list(type(form).argument_names())})."
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
        """Returns a copy with `changes` applied (and checked). The form's
        arguments may be changed by name (`replace(steps=3)`)."""
        # The constructor routes the form's arguments to the form.
        shared = {k: getattr(self, k) for k in SHARED_ARGUMENTS}
        return type(self)(**{**shared, **changes})

    def get_config(self) -> dict:
        return {
            "norm": self.norm,
            "sigma": self.sigma,
            "form": keras.saving.serialize_keras_object(self.form),
            "alpha": self.alpha,
            "input_range": None if self.input_range is None else list(self.input_range),
            "inputs_to_regularize": (
                None
                if self.inputs_to_regularize is None
                else list(self.inputs_to_regularize)
            ),
            "feature_mask": _mask_config(self.feature_mask),
            "labeled_rows": self.labeled_rows,
        }

    @classmethod
    def from_config(cls, config: dict) -> GradientRegularizer:
        unknown = sorted(set(config) - set(REGULARIZER_ARGUMENTS))
        if unknown:
            raise ValueError(
                f"A regularizer config takes the keys {list(REGULARIZER_ARGUMENTS)}. "
                f"Received unknown keys: {unknown}"
            )
        return cls(**config)

    def _key(self):
        return json.dumps(self.get_config(), sort_keys=True, default=repr)

    def __eq__(self, other):
        if not isinstance(other, GradientRegularizer):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        shared = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k, default in SHARED_ARGUMENTS.items()
            if k == "form" or getattr(self, k) != default or k in ("norm", "sigma")
        )
        return f"GradientRegularizer({shared})"


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


def _mask_config(mask):
    if isinstance(mask, dict):
        return {k: _listed(v) for k, v in mask.items()}
    return _listed(mask)


def _listed(values):
    """Nested tuples as nested lists (the JSON of a config)."""
    return [_listed(v) for v in values] if isinstance(values, tuple) else values


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
