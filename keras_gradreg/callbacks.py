"""Callbacks for training a GradRegModel: resumable backups, a sigma
schedule, epoch timing, and robust accuracy in the logs."""

from keras_gradreg.src.evaluation.overfitting_guard import (
    CatastrophicOverfittingGuard,
)
from keras_gradreg.src.evaluation.robust_accuracy import RobustAccuracy
from keras_gradreg.src.training.callbacks import (
    BackupAndRestore,
    EpochTimer,
    SigmaSchedule,
)

__all__ = [
    "BackupAndRestore",
    "CatastrophicOverfittingGuard",
    "EpochTimer",
    "RobustAccuracy",
    "SigmaSchedule",
]
