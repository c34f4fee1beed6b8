"""The maxout papers' optimizer: SGD whose momentum can change during `fit`
and whose learning rate can be scaled per layer, with pylearn2's
per-update exponential learning-rate decay with a floor and its linear
decay over epochs."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number


def _check_range(name, value, low, high, *, low_open=False):
    """`value` as a float in [low, high] ((low, high] when `low_open`)."""
    return check_number(name, value, low, exclusive=low_open, maximum=high, finite=True)


@keras_gradreg_export("keras_gradreg.optimizers.FlooredExponentialDecay")
class FlooredExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Per-update exponential decay with a floor (pylearn2's `ExponentialDecay`).

    `lr(t) = max(initial_learning_rate / decay_factor ** t, min_learning_rate)`
    for update `t = 0, 1, ...`. The maxout papers use `decay_factor=1.000004`
    (permutation-invariant MNIST), `1.00004` (convolutional MNIST) and
    `min_learning_rate=1e-6`.

    Args:
        initial_learning_rate: `lr(0)`, > 0.
        decay_factor: the divisor applied at every update, >= 1.
        min_learning_rate: the floor, in [0, initial_learning_rate].

    Examples:
        >>> schedule = FlooredExponentialDecay(0.1, 1.000004, 1e-6)
        >>> round(float(schedule(121_500)), 4)
        0.0615
    """

    def __init__(
        self,
        initial_learning_rate: float = 0.1,
        decay_factor: float = 1.000004,
        min_learning_rate: float = 1e-6,
    ):
        self.initial_learning_rate = _check_range(
            "initial_learning_rate", initial_learning_rate, 0.0, 1e3, low_open=True
        )
        self.decay_factor = _check_range("decay_factor", decay_factor, 1.0, 1e3)
        self.min_learning_rate = _check_range(
            "min_learning_rate", min_learning_rate, 0.0, self.initial_learning_rate
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        # lr0 * exp(-t log f): stable for large t, exact for f = 1.
        decayed = self.initial_learning_rate * ops.exp(
            -step * math.log(self.decay_factor)
        )
        return ops.maximum(decayed, self.min_learning_rate)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_factor": self.decay_factor,
            "min_learning_rate": self.min_learning_rate,
        }


@keras_gradreg_export("keras_gradreg.optimizers.LinearDecay")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear decay over epochs (pylearn2's `LinearDecayOverEpoch`).

    In 1-based epoch `e = floor(t / steps_per_epoch) + 1` of update `t`,
    `lr = initial_learning_rate * (1 - (1 - decay_factor) * f)` with
    `f = clip((e - start + 1) / (saturate - start + 1), 0, 1)`: the rate
    falls by equal steps from epoch `start` and stays at
    `initial_learning_rate * decay_factor` from epoch `saturate` on. The
    maxout papers' CIFAR-10 runs use `start=1, saturate=500,
    decay_factor=0.01`.

    Args:
        initial_learning_rate: the rate before the decay, > 0.
        steps_per_epoch: updates per epoch, >= 1.
        start: the first epoch whose rate is decayed, >= 1.
        saturate: the epoch the decay ends, > `start`.
        decay_factor: the final rate over the initial one, in [0, 1].

    Examples:
        >>> schedule = LinearDecay(0.17, steps_per_epoch=10, saturate=500)
        >>> round(float(schedule(4990)), 5)  # epoch 500 on: 0.17 * 0.01
        0.0017
    """

    def __init__(
        self,
        initial_learning_rate: float,
        steps_per_epoch: int,
        start: int = 1,
        saturate: int = 500,
        decay_factor: float = 0.01,
    ):
        self.initial_learning_rate = _check_range(
            "initial_learning_rate", initial_learning_rate, 0.0, 1e3, low_open=True
        )
        self.steps_per_epoch = check_integer("steps_per_epoch", steps_per_epoch)
        self.start = check_integer("start", start)
        self.saturate = check_integer("saturate", saturate, minimum=self.start + 1)
        self.decay_factor = _check_range("decay_factor", decay_factor, 0.0, 1.0)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch) + 1.0
        span = float(self.saturate - self.start + 1)
        fraction = ops.clip((epoch - self.start + 1.0) / span, 0.0, 1.0)
        return self.initial_learning_rate * (1.0 - (1.0 - self.decay_factor) * fraction)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "start": self.start,
            "saturate": self.saturate,
            "decay_factor": self.decay_factor,
        }


@keras_gradreg_export("keras_gradreg.optimizers.MomentumSGD")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with its momentum held in a variable.

    Keras's SGD stores momentum as a Python float, which a compiled train
    step bakes in as a constant: changing it between epochs has no effect.
    Here the momentum is an optimizer variable (saved and restored with the
    optimizer), so `keras_gradreg.protocol.MomentumSchedule` can move it
    while `fit` runs, as the maxout papers' `MomentumAdjustor` does. The
    update is Keras's (and pylearn2's): `v <- mu v - lr g`, `w <- w + v`.

    `learning_rate_scales` multiplies the learning rate of chosen layers'
    variables, as pylearn2's `W_lr_scale` and `b_lr_scale` do (the maxout
    papers' CIFAR-10 network trains its convolutions at 0.05 times the
    rate of its other layers): a variable whose path (`"conv_1/kernel"`)
    has a component named as a key takes that key's factor.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        momentum: the initial momentum, in (0, 1).
        nesterov: Nesterov momentum, as in `keras.optimizers.SGD`.
        learning_rate_scales: layer name -> factor > 0 on its variables'
            learning rate (default: none).
        name: optimizer name.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.

    Examples:
        >>> optimizer = MomentumSGD(0.1, momentum=0.5)
        >>> optimizer.momentum
        0.5
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.5,
        nesterov: bool = False,
        learning_rate_scales: dict | None = None,
        name: str = "momentum_sgd",
        **kwargs,
    ):
        momentum = _check_range("momentum", momentum, 0.0, 1.0, low_open=True)
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            name=name,
            **kwargs,
        )
        self._initial_momentum = momentum
        self.momentum_variable = None
        scales = {} if learning_rate_scales is None else learning_rate_scales
        if not isinstance(scales, dict) or not all(isinstance(k, str) for k in scales):
            raise ValueError(
                "Argument `learning_rate_scales` must be a dict from layer names to "
                f"factors. Received: learning_rate_scales={learning_rate_scales!r}"
            )
        scales = {
            name_: _check_range(
                f"learning_rate_scales[{name_!r}]", v, 0.0, 1e3, low_open=True
            )
            for name_, v in scales.items()
        }
        self.learning_rate_scales = scales

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Read once from the Keras variables: the update step may see the
        # backend's own (a tf.Variable has no Keras path).
        self._scales = [self._scale(v) for v in variables]
        self.momentum_variable = self.add_variable(
            (),
            initializer=keras.initializers.Constant(self._initial_momentum),
            dtype="float32",
            name="momentum",
        )

    def set_momentum(self, value: float) -> None:
        """Sets the momentum used by the following updates, in (0, 1)."""
        value = _check_range("momentum", value, 0.0, 1.0, low_open=True)
        self.momentum = value  # what get_config reports
        if self.momentum_variable is not None:
            self.momentum_variable.assign(value)
        else:
            self._initial_momentum = value

    def _scale(self, variable) -> float:
        """The learning-rate factor of a Keras `variable` (1 unless its path
        names a layer of `learning_rate_scales`)."""
        names = variable.path.split("/")
        factors = [
            f for layer, f in self.learning_rate_scales.items() if layer in names
        ]
        return factors[0] if factors else 1.0

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        if self.learning_rate_scales:
            scale = self._scales[self._get_variable_index(variable)]
            learning_rate = learning_rate * scale
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, velocity * momentum - gradient * learning_rate)
        if self.nesterov:
            self.assign_add(variable, velocity * momentum - gradient * learning_rate)
        else:
            self.assign_add(variable, velocity)

    def get_config(self):
        config = super().get_config()
        if self.learning_rate_scales:
            config["learning_rate_scales"] = dict(self.learning_rate_scales)
        return config
