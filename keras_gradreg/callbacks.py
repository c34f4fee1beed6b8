"""Keras callbacks for training and reporting."""

from __future__ import annotations

import statistics
import time

import keras

from keras_gradreg.api_export import keras_gradreg_export


@keras_gradreg_export("keras_gradreg.callbacks.EpochTimer")
class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every training epoch, in seconds.

    Example:
        >>> timer = EpochTimer()
        >>> # model.fit(x, y, epochs=3, callbacks=[timer]); timer.median
    """

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    @property
    def median(self) -> float:
        """The median epoch time, or NaN before the first epoch ends."""
        return statistics.median(self.times) if self.times else float("nan")
