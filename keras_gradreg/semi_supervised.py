"""Semi-supervised batches for the label-free member."""

from keras_gradreg.src.training.semi_supervised import (
    PASSES,
    SemiSupervisedBatches,
    balanced_labels,
)

__all__ = ["PASSES", "SemiSupervisedBatches", "balanced_labels"]
