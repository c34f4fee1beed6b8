"""The maxout papers' optimizer: SGD whose momentum can change during `fit`,
and pylearn2's per-update exponential learning-rate decay with a floor."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_gradreg.api_export import keras_gradreg_export


def _check_range(name, value, low, high, *, low_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(
            f"Argument `{name}` must be a number in {bracket}{low}, {high}]. "
            f"Received: {name}={value!r}"
        )
    return float(value)


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

    Example:
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


@keras_gradreg_export("keras_gradreg.optimizers.MomentumSGD")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with its momentum held in a variable.

    Keras's SGD stores momentum as a Python float, which a compiled train
    step bakes in as a constant: changing it between epochs has no effect.
    Here the momentum is an optimizer variable (saved and restored with the
    optimizer), so `keras_gradreg.protocol.MomentumSchedule` can move it
    while `fit` runs, as the maxout papers' `MomentumAdjustor` does. The
    update is Keras's (and pylearn2's): `v <- mu v - lr g`, `w <- w + v`.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        momentum: the initial momentum, in (0, 1).
        nesterov: Nesterov momentum, as in `keras.optimizers.SGD`.
        name: optimizer name.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.

    Example:
        >>> optimizer = MomentumSGD(0.1, momentum=0.5)
        >>> optimizer.momentum
        0.5
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.5,
        nesterov: bool = False,
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

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
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

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, velocity * momentum - gradient * learning_rate)
        if self.nesterov:
            self.assign_add(variable, velocity * momentum - gradient * learning_rate)
        else:
            self.assign_add(variable, velocity)
