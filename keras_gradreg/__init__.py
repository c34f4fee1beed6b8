"""keras_gradreg: the unified gradient regularization family (Lyu, Huang and
Liang, 2015) for Keras 3 on TensorFlow, JAX and PyTorch."""

from keras_gradreg import callbacks, datasets, layers, models
from keras_gradreg.attacks import classification_accuracy, fgm, fgsm_accuracy
from keras_gradreg.models import GradRegModel
from keras_gradreg.norms import (
    canonical_norm,
    dual_exponent,
    per_example_norm,
    worst_case_perturbation,
)
from keras_gradreg.regularizer import FORMS, GradientRegularizer

__version__ = "0.1.0"

__all__ = [
    "FORMS",
    "GradRegModel",
    "GradientRegularizer",
    "callbacks",
    "canonical_norm",
    "classification_accuracy",
    "datasets",
    "layers",
    "models",
    "dual_exponent",
    "fgm",
    "fgsm_accuracy",
    "per_example_norm",
    "worst_case_perturbation",
]
