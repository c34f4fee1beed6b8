"""The cyclic (one-cycle) learning rate of the fast adversarial-training
papers."""

from __future__ import annotations

import keras
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number


@keras_gradreg_export("keras_gradreg.optimizers.CyclicLearningRate")
class CyclicLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that rises linearly from `min_learning_rate` to
    `max_learning_rate` and falls back over `total_steps` updates.

    At update `t` (the optimizer's `iterations`, from 0), with
    `T = total_steps` and `P = peak * T`:

        lr(t) = min + (max - min) * t / P                  for t <= P
        lr(t) = min + (max - min) * (T - t) / (T - P)      for P < t <= T
        lr(t) = min                                        for t > T

    Wong, Rice & Kolter (2020) train with `peak=0.5` (PyTorch's `CyclicLR`
    with `step_size_up = step_size_down = T / 2`, their "cyclic" schedule:
    the first update has the rate 0); Andriushchenko & Flammarion (2020)
    with `peak=0.4` (`np.interp` through 0, 2/5 and all of the epochs).

    Args:
        max_learning_rate: the rate at the peak, > 0.
        total_steps: updates of the whole run (epochs x steps per epoch),
            >= 1.
        peak: where the peak lies, as a fraction of the run, in (0, 1).
        min_learning_rate: the rate at the start and the end, in
            [0, max_learning_rate].

    Examples:
        >>> schedule = CyclicLearningRate(0.2, total_steps=100)
        >>> [round(float(schedule(t)), 6) for t in (0, 25, 50, 75, 100)]
        [0.0, 0.1, 0.2, 0.1, 0.0]
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        peak: float = 0.5,
        min_learning_rate: float = 0.0,
    ):
        self.max_learning_rate = check_number(
            "max_learning_rate", max_learning_rate, exclusive=True, finite=True
        )
        self.total_steps = check_integer("total_steps", total_steps)
        self.peak = check_number("peak", peak, exclusive=True, below=1.0)
        self.min_learning_rate = check_number(
            "min_learning_rate", min_learning_rate, maximum=self.max_learning_rate
        )

    def __call__(self, step):
        t = ops.cast(step, "float32")
        total = float(self.total_steps)
        top = self.peak * total
        rise = t / top
        fall = (total - t) / (total - top)
        fraction = ops.clip(ops.minimum(rise, fall), 0.0, 1.0)
        span = self.max_learning_rate - self.min_learning_rate
        return self.min_learning_rate + span * fraction

    def get_config(self) -> dict:
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "peak": self.peak,
            "min_learning_rate": self.min_learning_rate,
        }
