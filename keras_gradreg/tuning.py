"""KerasTuner search over the family's norm, strength and form (needs
keras-tuner: the `tuning` extra)."""

from keras_gradreg.src.tools.tuning import (
    OBJECTIVES,
    SEARCHED,
    GradRegHyperModel,
    default_sigma_range,
    describe_trial,
    objective,
)

__all__ = [
    "OBJECTIVES",
    "SEARCHED",
    "GradRegHyperModel",
    "default_sigma_range",
    "describe_trial",
    "objective",
]
