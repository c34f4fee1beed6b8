"""`GradRegModel`: a `keras.Model` trained with the unified gradient
regularization family."""

from __future__ import annotations

import random
import warnings

import keras

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family import inputs
from keras_gradreg.src.family.regularizer import (
    REGULARIZER_ARGUMENTS,
    GradientRegularizer,
    saved_config,
)
from keras_gradreg.src.keras_compat import (
    BackendTrainer,
    Functional,
    default,
    functional_init_arguments,
)
from keras_gradreg.src.training import backend as _backend
from keras_gradreg.src.training.objective import needs_second_order

_SUPPORTED_REDUCTIONS = ("sum_over_batch_size",)


@keras_gradreg_export("keras_gradreg.GradRegModel")
class GradRegModel(keras.Model):
    """A Keras model trained on `mean_i max_{||r_i||_p <= sigma} L(x_i + r_i)`.

    Use it exactly like `keras.Model`, functionally or by subclassing; the
    regularizer arguments select the family member and its training form
    (see `GradientRegularizer` for the mathematics). `fit` then minimizes
    `alpha * L(x) + (1 - alpha) * L_adv` per example, where `L` is the
    compiled loss, and `History` shows:

    - `loss`: the mean objective that is minimized (plus any layer
      regularization losses);
    - `clean_loss`: the compiled loss on the clean inputs;
    - `adv_loss`: the adversarial term `L_adv` of the form;
    - `grad_norm`: the mean per-example `||dL/dx||_q` (q dual to `norm`);
    - `sigma`: the radius trained with in that epoch (see
      `callbacks.SigmaSchedule`);
    - compiled metrics, computed on the clean inputs.

    `evaluate` and `predict` are Keras's own: they see clean inputs only.

    Args:
        *args: for the functional API, `inputs` and `outputs`.
        regularizer: a `GradientRegularizer` (or its config dict) instead of
            the separate arguments below.
        **kwargs: the `GradientRegularizer` arguments by name (`norm`,
            `sigma`, `form`, `alpha`, `input_range`, `inputs_to_regularize`,
            `feature_mask`, `labeled_rows`, and 0.1.0's names for the forms'
            arguments, such as `steps` or `fd_step`); the rest goes to
            `keras.Model` (e.g. `name`). The defaults are the l2 penalty at
            sigma 0.1.

    Raises:
        ValueError: on any invalid regularizer argument, naming it and the
            value received.

    Examples:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> outputs = keras.layers.Dense(3, activation="softmax")(inputs)
        >>> model = GradRegModel(inputs, outputs, norm="linf", sigma=0.1)
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> x, y = np.random.rand(8, 4), np.random.randint(0, 3, 8)
        >>> history = model.fit(x, y, epochs=1, verbose=0)
        >>> sorted(k for k in history.history if k != "loss")
        ['adv_loss', 'clean_loss', 'grad_norm', 'sigma']
    """

    def __new__(cls, *args, **kwargs):
        if functional_init_arguments(args, kwargs) and not issubclass(cls, Functional):
            if cls is not GradRegModel:
                raise ValueError(
                    f"{cls.__name__} subclasses GradRegModel and defines its own "
                    "`call`; build functional models with "
                    "`GradRegModel(inputs, outputs, ...)`. Received: "
                    f"{cls.__name__}(inputs, outputs, ...)"
                )
            # Keras would turn GradRegModel itself into a Functional subclass
            # (for good, breaking later subclassing): use a dedicated class.
            cls = FunctionalGradRegModel
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, regularizer=None, **kwargs):
        separate = {k: kwargs.pop(k) for k in REGULARIZER_ARGUMENTS if k in kwargs}
        separate = {k: v for k, v in separate.items() if v is not None}
        if regularizer is not None and separate:
            raise ValueError(
                "Pass either `regularizer` or the separate arguments "
                f"{list(REGULARIZER_ARGUMENTS)}, not both. Received: "
                f"regularizer={regularizer!r} and {separate}"
            )
        if isinstance(self, Functional):
            BackendTrainer.__init__(self)
            Functional.__init__(self, *args, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        self.regularizer = (
            regularizer if regularizer is not None else GradientRegularizer(**separate)
        )
        self.sigma_metric = _SigmaValue(self.regularizer.sigma)
        self.seed_metric = _PerturbationSeed()
        self.clean_loss_tracker = keras.metrics.Mean(name="clean_loss")
        self.adv_loss_tracker = keras.metrics.Mean(name="adv_loss")
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")

    @property
    def regularizer(self) -> GradientRegularizer:
        """The family member and form; assign a new one to change it (the
        compiled train step is rebuilt on the next `fit`)."""
        return self._regularizer

    @regularizer.setter
    def regularizer(self, value):
        if isinstance(value, dict):
            value = GradientRegularizer.from_config(value)
        if not isinstance(value, GradientRegularizer):
            raise ValueError(
                "`regularizer` must be a `keras_gradreg.GradientRegularizer` "
                f"or its config dict. Received: regularizer={value!r}"
            )
        if getattr(self, "compiled", False):
            _check_jit_compatible(value, self.jit_compile)
        previous = getattr(self, "_regularizer", None)
        # Bypass Keras's attribute tracking: this is a plain config object.
        object.__setattr__(self, "_regularizer", value)
        if getattr(self, "sigma_metric", None) is not None:
            self.sigma_metric.assign(value.sigma)
        if getattr(self, "train_function", None) is not None and not _same_trace(
            previous, value
        ):
            # Rebuilt now rather than on the next `fit`: a callback may change
            # the form while `fit` runs, and `fit` calls `train_function`.
            self.make_train_function(force=True)

    @property
    def sigma_variable(self):
        """The variable holding sigma, read by the compiled train step: a new
        sigma takes effect without retracing (see `callbacks.SigmaSchedule`)."""
        return self.sigma_metric.variable

    def make_train_function(self, force=False):
        # Checked here rather than in `compile`, whose override would stop
        # Keras from compiling loaded models from their saved config.
        _check_loss_reductions(self.loss)
        _check_compute_loss(self)
        inputs.check_differentiable_inputs(self, self.regularizer)
        _check_jit_compatible(self.regularizer, self.jit_compile)
        _backend.check_distribution()
        super().make_train_function(force=force)
        self.train_function = _backend.train_function(self, self.train_function)
        return self.train_function

    def fit(self, x=None, y=None, *args, **kwargs):
        inputs.check_training_range(self.regularizer, x)
        return super().fit(x, y, *args, **kwargs)

    def compile_from_config(self, config):
        super().compile_from_config(config)
        if _cannot_compile(self.regularizer, self.jit_compile):
            # A model saved on JAX carries jit_compile=True; on torch the
            # double backpropagation of its form cannot be compiled.
            warnings.warn(
                f"This model was saved with jit_compile=True, and the "
                f"{self.regularizer.form.name} form differentiates twice, which "
                "torch.compile cannot do: it trains eagerly (jit_compile=False) "
                "on the torch backend.",
                UserWarning,
                stacklevel=2,
            )
            self.jit_compile = False

    @property
    def perturbation_seed(self) -> keras.random.SeedGenerator:
        """The generator of the multistep form's random starts (its state
        is part of every backend's compiled training state)."""
        return self.seed_metric.generator

    @property
    def family_trackers(self):
        """The `Mean` metrics behind `clean_loss`, `adv_loss` and
        `grad_norm` (training only)."""
        return (self.clean_loss_tracker, self.adv_loss_tracker, self.grad_norm_tracker)

    def train_step(self, *args):
        return _backend.train_step(self, *args)

    def test_step(self, *args):
        return _backend.multi_worker_logs(self, super().test_step(*args))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TensorFlow only (Keras calls it from its TF trainer): a
        # multi-worker batch, see `backend.tensorflow.first_local_batch`;
        # without a strategy, built before the step is traced, see
        # `keras_compat.tf_build_before_tracing` (one trace, not two).
        local = _backend.first_local_batch(self, iterator)
        if local is not None:
            iterator, data_batch = None, local
        if _keras_compat.tf_build_before_tracing(self, iterator, data_batch):
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # `evaluate` sees clean inputs only: leave out the training terms.
        logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        for tracker in (*self.family_trackers, self.sigma_metric, self.seed_metric):
            logs.pop(tracker.name, None)
        return logs

    @default
    def get_config(self):
        config = super().get_config()
        config.pop("regularizer", None)
        config.update(self.regularizer.get_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Files saved before an argument existed keep the behaviour they
        # were trained with (`regularizer.saved_config`).
        return super().from_config(saved_config(config), custom_objects)


@keras_gradreg_export("keras_gradreg.models.FunctionalGradRegModel")
class FunctionalGradRegModel(GradRegModel, Functional):
    """The class of `GradRegModel(inputs, outputs, ...)`: a functional
    GradRegModel. Build it through `GradRegModel`."""


class _SigmaValue(keras.metrics.Metric):
    """sigma as a variable, logged as "sigma" each epoch.

    A metric rather than a weight: its variable is part of every backend's
    compiled training state (JAX passes metric variables through the
    stateless step), it is not a model weight (saved models and
    `count_params` are unchanged; the config carries sigma), and
    `reset_metrics` leaves it alone.
    """

    def __init__(self, value, name="sigma"):
        super().__init__(name=name)
        self.variable = self.add_variable(
            (), initializer=keras.initializers.Constant(value), dtype="float32",
            name="value",
        )  # fmt: skip

    def assign(self, value):
        self.variable.assign(value)

    def update_state(self, *args, **kwargs):
        del args, kwargs  # set by assignment only

    def reset_state(self):
        pass  # survives the per-epoch reset of the other metrics

    def result(self):
        # A copy: JAX donates the state's buffers to the next step, which
        # would delete an array that aliases the variable's.
        return keras.ops.copy(self.variable.value)


class _PerturbationSeed(keras.metrics.Metric):
    """The state of the random starts' `SeedGenerator`, held as a metric
    variable for the reasons `_SigmaValue` gives (JAX threads it through
    the stateless step; it is not a weight; `reset_metrics` keeps it).
    Seeded from Python's `random`, so `keras.utils.set_random_seed` fixes
    it."""

    def __init__(self, name="perturbation_seed"):
        super().__init__(name=name)
        self.generator = keras.random.SeedGenerator(random.randint(1, 10**9))
        self.state = self.generator.state  # tracked: a metric variable

    def update_state(self, *args, **kwargs):
        del args, kwargs  # advanced by the draws only

    def reset_state(self):
        pass

    def result(self):
        return keras.ops.zeros(())  # never logged (see `compute_metrics`)


def _same_trace(previous, new) -> bool:
    """Whether a step traced for `previous` serves `new`: everything but
    sigma is baked into the trace; sigma is read from a variable, except
    that sigma = 0 traces the plain step."""
    if previous is None:
        return False
    return previous.replace(sigma=new.sigma) == new and previous.active == new.active


def _cannot_compile(regularizer, jit_compile) -> bool:
    """Whether torch.compile would have to differentiate twice."""
    return (
        keras.backend.backend() == "torch"
        and jit_compile is True
        and needs_second_order(regularizer)
    )


def _check_jit_compatible(regularizer, jit_compile):
    if _cannot_compile(regularizer, jit_compile):
        raise ValueError(
            f"The {regularizer.form.name} form differentiates twice, which "
            "torch.compile cannot do. Use `jit_compile=False` in `compile()`, or "
            "form='finite_difference' (first derivatives only). Received: "
            f"jit_compile=True, form={regularizer.form.name!r} on the torch backend."
        )


def _check_compute_loss(model):
    if type(model).compute_loss is not keras.Model.compute_loss:
        raise ValueError(
            "GradRegModel builds its objective from the loss given to `compile()` "
            "(clean, per-example and perturbed), so an overridden `compute_loss` "
            "would be bypassed. Put the loss in `compile(loss=...)` and layer "
            "losses in `add_loss`. Received: "
            f"{type(model).__name__}.compute_loss overridden"
        )


def _check_loss_reductions(loss):
    for item in keras.tree.flatten(loss):
        reduction = getattr(item, "reduction", "sum_over_batch_size")
        if (
            isinstance(item, keras.losses.Loss)
            and reduction not in _SUPPORTED_REDUCTIONS
        ):
            raise ValueError(
                "GradRegModel defines its penalty per example and needs losses "
                "with Keras's default reduction 'sum_over_batch_size'. "
                f"Received: loss={item!r} with reduction={reduction!r}"
            )
