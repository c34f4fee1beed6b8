"""The maxout papers' two-stage training protocol."""

from keras_gradreg.src.maxout.protocol import (
    MATCHES,
    MAXOUT_PROTOCOLS,
    STAGE2_OPTIMIZERS,
    MaxoutProtocol,
    MomentumSchedule,
    train_then_continue,
)
from keras_gradreg.src.maxout.stopping import (
    ContinueUntilMatched,
    NoisyLoss,
    ResumableEarlyStopping,
    noisy_loss,
)

__all__ = [
    "MATCHES",
    "MAXOUT_PROTOCOLS",
    "STAGE2_OPTIMIZERS",
    "ContinueUntilMatched",
    "MaxoutProtocol",
    "MomentumSchedule",
    "NoisyLoss",
    "ResumableEarlyStopping",
    "noisy_loss",
    "train_then_continue",
]
