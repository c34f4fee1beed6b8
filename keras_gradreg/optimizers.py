"""The maxout papers' optimizer and learning-rate schedules, and the
cyclic schedule of the fast adversarial-training papers."""

from keras_gradreg.src.maxout.optimizers import (
    FlooredExponentialDecay,
    LinearDecay,
    MomentumSGD,
)
from keras_gradreg.src.recipes.schedules import CyclicLearningRate

__all__ = [
    "CyclicLearningRate",
    "FlooredExponentialDecay",
    "LinearDecay",
    "MomentumSGD",
]
