"""KerasTuner search over the family's norm, strength and form.

`GradRegHyperModel` turns any model-building function into a
`keras_tuner.HyperModel` whose search space is the regularizer:

| hyperparameter  | default search                                          |
|-----------------|---------------------------------------------------------|
| `norm`          | `hp.Choice` over "linf", "l2", "l1"                     |
| `sigma_<norm>`  | `hp.Float(log)` per norm (conditional on `norm`)        |
| `form`          | fixed "penalty" (or a `hp.Choice` over `forms`)         |
| `alpha`         | fixed 0 (or `hp.Float` over an `alpha` range)           |
| `learning_rate` | fixed 1e-3 (or `hp.Float(log)` over a range)            |

Each norm has its own `sigma` because sensible radii differ by orders of
magnitude between norms. The defaults suit inputs in [0, 1] of MNIST's size
(784 values): linf [0.003, 0.3], l2 [0.03, 3], l1 [0.3, 30]; they scale with
the width of the input range, and the l2 and l1 ranges with
`sqrt(dimension / 784)`.

Objectives (`objective(name)`): "val_accuracy", "val_loss",
"val_robust_accuracy" (from `callbacks.RobustAccuracy`, added by the
hypermodel's `fit`) and "val_robust_score", the mean of the clean and robust
validation accuracies.
"""

from __future__ import annotations

import math

import keras
import keras_tuner
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.evaluation.attacks import classification_accuracy
from keras_gradreg.src.evaluation.robust_accuracy import RobustAccuracy
from keras_gradreg.src.family.norms import canonical_norm
from keras_gradreg.src.family.regularizer import FORMS, GradientRegularizer

#: Objective name -> direction.
OBJECTIVES = {
    "val_accuracy": "max",
    "val_loss": "min",
    "val_robust_accuracy": "max",
    "val_robust_score": "max",
}
_ROBUST_OBJECTIVES = ("val_robust_accuracy", "val_robust_score")
# MNIST-calibrated sigma ranges for inputs in [0, 1] and 784 values.
_MNIST_SIGMA = {"linf": (0.003, 0.3), "l2": (0.03, 3.0), "l1": (0.3, 30.0)}
_FIXABLE = ("norm", "sigma", "form", "alpha", "learning_rate")


@keras_gradreg_export("keras_gradreg.tuning.objective")
def objective(name: str) -> keras_tuner.Objective:
    """The `keras_tuner.Objective` of a supported objective name.

    Args:
        name: one of `OBJECTIVES`.

    Returns:
        The objective, with its direction.

    Raises:
        ValueError: for an unknown name.

    Examples:
        >>> objective("val_robust_score").direction
        'max'
    """
    if name not in OBJECTIVES:
        raise ValueError(
            f"Argument `objective` must be one of {tuple(OBJECTIVES)}. "
            f"Received: objective={name!r}"
        )
    return keras_tuner.Objective(name, direction=OBJECTIVES[name])


@keras_gradreg_export("keras_gradreg.tuning.default_sigma_range")
def default_sigma_range(
    norm, input_shape=(28, 28), input_range=(0.0, 1.0)
) -> tuple[float, float]:
    """A log-uniform search range for sigma of one norm.

    Args:
        norm: "linf", "l2" or "l1".
        input_shape: the shape of one example.
        input_range: `(low, high)` of the inputs.

    Returns:
        `(min_value, max_value)`.

    Examples:
        >>> default_sigma_range("l2")
        (0.03, 3.0)
    """
    norm = canonical_norm(norm)
    if norm not in _MNIST_SIGMA:
        raise ValueError(
            "Default sigma ranges exist for 'linf', 'l2' and 'l1'; pass "
            f"`sigma_ranges` for others. Received: norm={norm!r}"
        )
    scale = float(input_range[1] - input_range[0])
    if norm != "linf":
        scale *= math.sqrt(math.prod(input_shape) / 784.0)
    low, high = _MNIST_SIGMA[norm]
    return (round(low * scale, 12), round(high * scale, 12))


def _choice(hp, name, values):
    """`hp.Choice`, or `hp.Fixed` when there is nothing to choose."""
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, list(values))


class _RobustScore(keras.callbacks.Callback):
    """Logs `val_robust_score`: the mean of clean and robust validation
    accuracy (runs after `RobustAccuracy`). The clean accuracy is Keras's
    `val_accuracy`, or, when the model compiles no accuracy metric, measured
    on the attacked subset."""

    def __init__(self, robust: RobustAccuracy):
        super().__init__()
        self.robust = robust

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_robust_accuracy" in logs:
            clean = logs.get("val_accuracy")
            if clean is None:  # no compiled accuracy (`metrics=()`): measure it
                clean = classification_accuracy(
                    self.model, self.robust.x, self.robust.y
                )
            logs["val_robust_score"] = 0.5 * (clean + logs["val_robust_accuracy"])


# The regularizer fields a GradRegHyperModel sets; the model keeps the rest.
SEARCHED = ("norm", "sigma", "form", "alpha", "input_range")


@keras_gradreg_export("keras_gradreg.tuning.GradRegHyperModel")
class GradRegHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` searching the family's norm and strength.

    Args:
        build_model: `hp -> GradRegModel` (may tune the architecture with
            `hp` too). Its regularizer is replaced by the searched one, and
            the model is compiled here.
        norms: the norms to choose from.
        sigma_ranges: dict norm -> `(min, max)` overriding the defaults of
            `default_sigma_range`.
        forms: the forms to choose from (default: the penalty form only).
        alpha: None (fixed 0) or a range `(min, max)` in [0, 1).
        learning_rate: a float (fixed) or a range `(min, max)` (log).
        fixed: dict of fixed values: any of "norm", "sigma" (every norm),
            "sigma_<norm>", "form", "alpha", "learning_rate".
        input_shape: shape of one example (scales the default l2/l1 ranges).
        input_range: `(low, high)` of the inputs: the regularizer's clipping
            and the attack's threat model.
        loss: compiled into each model.
        metrics: compiled into each model.
        robust_eps: radius of the validation attack behind
            "val_robust_accuracy" (norm `robust_norm`, attack PGD-10 on
            `robust_subset` validation examples).
        robust_norm: see `robust_eps`.
        robust_subset: see `robust_eps`.
        name: the hypermodel's name.
        robust_objective: add the robust callbacks in `fit` (needed for the
            robust objectives; requires `validation_data`).

    Examples:
        >>> import keras_gradreg as kg
        >>> hypermodel = GradRegHyperModel(
        ...     lambda hp: kg.models.mnist_maxout_mlp(units=16, pieces=2),
        ...     fixed={"form": "penalty"})
        >>> # tuner = keras_tuner.RandomSearch(hypermodel,
        >>> #     objective=objective("val_robust_score"), max_trials=8)
    """

    def __init__(
        self,
        build_model,
        *,
        norms=("linf", "l2", "l1"),
        sigma_ranges=None,
        forms=("penalty",),
        alpha=None,
        learning_rate=1e-3,
        fixed=None,
        input_shape=(28, 28),
        input_range=(0.0, 1.0),
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        robust_eps: float = 0.1,
        robust_norm="linf",
        robust_subset: int = 1000,
        robust_objective: bool = True,
        name: str = "gradreg",
    ):
        super().__init__(name=name)
        if not callable(build_model):
            raise ValueError(
                "Argument `build_model` must be a callable hp -> GradRegModel. "
                f"Received: build_model={build_model!r}"
            )
        self.build_model = build_model
        self.norms = tuple(canonical_norm(n) for n in norms)
        if not self.norms:
            raise ValueError("Argument `norms` must not be empty. Received: ()")
        self.fixed = dict(fixed or {})
        unknown = [
            k for k in self.fixed if k not in _FIXABLE and not k.startswith("sigma_")
        ]
        if unknown:
            raise ValueError(
                f"Argument `fixed` accepts {_FIXABLE} and 'sigma_<norm>'. "
                f"Received unknown keys: {unknown}"
            )
        if "norm" in self.fixed:
            self.fixed["norm"] = canonical_norm(self.fixed["norm"])
            self.norms = (self.fixed["norm"],)
        self.sigma_ranges = {}
        for norm in self.norms:
            given = (sigma_ranges or {}).get(norm)
            low, high = given or default_sigma_range(norm, input_shape, input_range)
            if not 0 < low < high:
                raise ValueError(
                    "Each sigma range must satisfy 0 < min < max (log sampling). "
                    f"Received: sigma_ranges[{norm!r}]={(low, high)!r}"
                )
            self.sigma_ranges[norm] = (float(low), float(high))
        self.forms = tuple(forms)
        bad = [f for f in self.forms if f not in FORMS]
        if bad or not self.forms:
            raise ValueError(
                f"Argument `forms` must be a non-empty subset of {FORMS}. Received: forms={forms!r}"
            )
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.input_range = input_range
        self.loss = loss
        self.metrics = list(metrics)
        self.robust_eps = robust_eps
        self.robust_norm = robust_norm
        self.robust_subset = robust_subset
        self.robust_objective = robust_objective

    def _value(self, hp, name, declare):
        """A fixed value as `hp.Fixed`, otherwise `declare()`."""
        if name in self.fixed:
            return hp.Fixed(name, self.fixed[name])
        return declare()

    def regularizer(self, hp) -> GradientRegularizer:
        """Declares the regularizer's hyperparameters in `hp` (or reads
        them back) and returns the `GradientRegularizer` they describe."""
        norm = self._value(hp, "norm", lambda: _choice(hp, "norm", self.norms))
        # Every norm's sigma is declared (active only when its norm is chosen)
        # so that the whole space exists from the first trial on.
        sigma = None
        for candidate in dict.fromkeys((*self.norms, norm)):
            name = f"sigma_{candidate}"
            with hp.conditional_scope("norm", [candidate]):
                if name in self.fixed or "sigma" in self.fixed:
                    value = hp.Fixed(
                        name, self.fixed.get(name, self.fixed.get("sigma"))
                    )
                else:
                    low, high = self.sigma_ranges.get(candidate) or default_sigma_range(
                        candidate
                    )
                    value = hp.Float(
                        name, low, high, sampling="log", default=math.sqrt(low * high)
                    )
            if candidate == norm:
                sigma = value
        form = self._value(hp, "form", lambda: _choice(hp, "form", self.forms))
        if self.alpha is None:
            alpha = self._value(hp, "alpha", lambda: hp.Fixed("alpha", 0.0))
        else:
            alpha = self._value(hp, "alpha", lambda: hp.Float("alpha", *self.alpha))
        return GradientRegularizer(
            norm=norm, sigma=sigma, form=form, alpha=alpha, input_range=self.input_range
        )

    def _learning_rate(self, hp):
        if isinstance(self.learning_rate, (tuple, list)):
            low, high = self.learning_rate
            declare = lambda: hp.Float("learning_rate", low, high, sampling="log")  # noqa: E731
        else:
            declare = lambda: hp.Fixed("learning_rate", self.learning_rate)  # noqa: E731
        return self._value(hp, "learning_rate", declare)

    def build(self, hp):
        """Builds `build_model(hp)`, sets the searched norm, sigma, form,
        alpha and input range on its regularizer (keeping its other
        settings: multistep steps, feature mask, the label-free member...)
        and compiles it."""
        searched = self.regularizer(hp)
        learning_rate = self._learning_rate(hp)
        model = self.build_model(hp)
        if not hasattr(model, "regularizer"):
            raise ValueError(
                "`build_model` must return a GradRegModel. Received: "
                f"{type(model).__name__}"
            )
        changes = {name: getattr(searched, name) for name in SEARCHED}
        if model.regularizer.form.name == searched.form.name:
            changes["form"] = model.regularizer.form  # with its own arguments
        model.regularizer = model.regularizer.replace(**changes)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=self.loss,
            metrics=list(self.metrics),
        )
        return model

    def robust_callbacks(self, validation_data) -> list:
        """`RobustAccuracy` and the combined score, in order.
        `validation_data` is `(x, y[, sample_weight])` or an iterable of
        such batches (a `tf.data.Dataset`, a `PyDataset`)."""
        robust = RobustAccuracy(
            _validation_arrays(validation_data, self.robust_subset),
            norm=self.robust_norm,
            eps=self.robust_eps,
            subset_size=self.robust_subset,
            input_range=self.input_range,
        )
        return [robust, _RobustScore(robust)]

    def fit(self, hp, model, *args, **kwargs):
        """`model.fit`, with the robust callbacks placed before KerasTuner's
        own (which read the objective)."""
        if self.robust_objective:
            validation = kwargs.get("validation_data")
            if validation is None:
                raise ValueError(
                    "The robust objectives need `validation_data=(x_val, y_val)` "
                    "in `tuner.search(...)`. Received: validation_data=None"
                )
            callbacks = list(kwargs.get("callbacks") or [])
            kwargs["callbacks"] = self.robust_callbacks(validation) + callbacks
        return model.fit(*args, **kwargs)


def _validation_arrays(validation, limit):
    """`(x, y)` arrays from a tuple or from batches (tf.data, PyDataset),
    reading about `limit` examples of the latter."""
    if isinstance(validation, (tuple, list)) and not isinstance(
        validation[0], (tuple, list)
    ):
        return validation[0], validation[1]
    xs, ys, count = [], [], 0
    for batch in validation:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "The robust objectives need labelled validation batches (x, y). "
                f"Received: a batch of type {type(batch).__name__}"
            )
        xs.append(keras.ops.convert_to_numpy(batch[0]))
        ys.append(keras.ops.convert_to_numpy(batch[1]))
        count += len(xs[-1])
        if limit is not None and count >= limit:
            break
    if not xs:
        raise ValueError("Argument `validation_data` yielded no batches.")
    return np.concatenate(xs), np.concatenate(ys)


@keras_gradreg_export("keras_gradreg.tuning.describe_trial")
def describe_trial(trial) -> dict:
    """One leaderboard row of a finished `keras_tuner` trial: its id, the
    regularizer's values and the last validation metrics.

    Examples:
        >>> # [describe_trial(t) for t in tuner.oracle.get_best_trials(10)]
    """
    values = trial.hyperparameters.values
    norm = values.get("norm")
    metrics = {}
    for name in ("val_accuracy", "val_robust_accuracy", "val_loss"):
        if trial.metrics.exists(name):
            metrics[name] = trial.metrics.get_last_value(name)
    return {
        "trial": trial.trial_id,
        "norm": norm,
        "sigma": values.get(f"sigma_{norm}"),
        "form": values.get("form"),
        "alpha": values.get("alpha"),
        "learning_rate": values.get("learning_rate"),
        "score": trial.score,
        **metrics,
    }
