"""Attacks and accuracy under attack: FGM/FGSM, PGD, APGD (cross-entropy,
DLR, targeted), targeted FAB (FAB-T), Square, and the input gradients behind them."""

from keras_gradreg.src.evaluation.attacks import *  # noqa: F403
from keras_gradreg.src.evaluation.attacks import __all__  # noqa: F401
