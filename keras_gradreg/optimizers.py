"""The maxout papers' optimizer and learning-rate schedules."""

from keras_gradreg.src.maxout.optimizers import (
    FlooredExponentialDecay,
    LinearDecay,
    MomentumSGD,
)

__all__ = ["FlooredExponentialDecay", "LinearDecay", "MomentumSGD"]
