"""keras_gradreg: the unified gradient regularization family (Lyu, Huang and
Liang, 2015) for Keras 3 on TensorFlow, JAX and PyTorch."""

import importlib

from keras_gradreg import (
    attacks,
    callbacks,
    datasets,
    forms,
    layers,
    models,
    optimizers,
    protocol,
    recipes,
    semi_supervised,
)
from keras_gradreg.attacks import (
    classification_accuracy,
    fgm,
    fgsm_accuracy,
    input_gradients,
    pgd,
)
from keras_gradreg.models import GradRegModel
from keras_gradreg.src.evaluation.noise import NoiseAccuracy, noise_accuracy
from keras_gradreg.src.evaluation.report import RobustnessReport, write_model_card
from keras_gradreg.src.evaluation.robustness import (
    GradientMaskingWarning,
    evaluate_robustness,
)
from keras_gradreg.src.family.norms import (
    canonical_norm,
    dual_exponent,
    per_example_norm,
    worst_case_perturbation,
)
from keras_gradreg.src.family.regularizer import FORMS, GradientRegularizer

__version__ = "0.2.0"

# Imported on first use, so that `import keras_gradreg` stays light: `tuning`
# needs keras-tuner and `plots` matplotlib (the `tuning` and `plots` extras).
_LAZY = ("plots", "tuning")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_gradreg.{name}")
    raise AttributeError(f"module 'keras_gradreg' has no attribute {name!r}")


__all__ = [
    "FORMS",
    "GradRegModel",
    "GradientMaskingWarning",
    "GradientRegularizer",
    "NoiseAccuracy",
    "RobustnessReport",
    "attacks",
    "callbacks",
    "canonical_norm",
    "classification_accuracy",
    "datasets",
    "dual_exponent",
    "evaluate_robustness",
    "fgm",
    "fgsm_accuracy",
    "forms",
    "input_gradients",
    "layers",
    "models",
    "noise_accuracy",
    "optimizers",
    "per_example_norm",
    "pgd",
    "plots",
    "protocol",
    "recipes",
    "semi_supervised",
    "tuning",
    "worst_case_perturbation",
    "write_model_card",
]
