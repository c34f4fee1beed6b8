"""Shuffled, augmented training batches without `tf.data`."""

from __future__ import annotations

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_bool, check_integer


@keras_gradreg_export("keras_gradreg.datasets.AugmentedBatches")
class AugmentedBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` for `fit`, shuffled every epoch and passed
    through an augmentation layer in training mode.

    A `keras.utils.PyDataset`, so it feeds `fit` on TensorFlow, JAX and
    PyTorch alike. Epoch `e`'s order and batch `i`'s augmentation are drawn
    from `(seed, e)` and `(seed, e, i)` alone, so that a run resumed at
    epoch `e` (`callbacks.BackupAndRestore`) sees the batches an
    uninterrupted run would: pass `epoch_callback()` to `fit`, which tells
    the batches the epoch Keras starts.

    Args:
        x: images, `(n, height, width, channels)`.
        y: labels, `n` of them.
        batch_size: examples per batch, >= 1.
        augmentation: a layer called as `augmentation(x, training=True,
            seed=...)` (`layers.PadCropFlip`), or None.
        shuffle: whether to reorder the examples every epoch.
        drop_remainder: leave out the last, smaller batch (PyTorch's
            `drop_last`).
        steps: at most this many batches per epoch (None: all).
        seed: seeds the order and the augmentation, >= 0.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Examples:
        >>> import numpy as np
        >>> x, y = np.zeros((10, 8, 8, 3), "float32"), np.arange(10)
        >>> batches = AugmentedBatches(x, y, batch_size=4)
        >>> len(batches), [len(b[1]) for b in (batches[0], batches[2])]
        (3, [4, 2])
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        augmentation=None,
        *,
        shuffle=True,
        drop_remainder=False,
        steps: int | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.x, self.y = np.asarray(x), np.asarray(y)
        if len(self.x) != len(self.y):
            raise ValueError(
                "Arguments `x` and `y` must hold the same number of examples. "
                f"Received: len(x)={len(self.x)}, len(y)={len(self.y)}"
            )
        self.batch_size = check_integer("batch_size", batch_size)
        self.augmentation = augmentation
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_remainder = check_bool("drop_remainder", drop_remainder)
        self.steps = check_integer("steps", steps, allow_none=True)
        self.seed = check_integer("seed", seed, minimum=0)
        if len(self) == 0:
            raise ValueError(
                f"Argument `batch_size` must leave at least one batch of the "
                f"{len(self.x)} examples. Received: batch_size={batch_size} with "
                f"drop_remainder={drop_remainder}"
            )
        self.set_epoch(0)

    def __len__(self) -> int:
        n = len(self.x)
        count = (
            n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)
        )
        return count if self.steps is None else min(count, self.steps)

    def set_epoch(self, epoch: int) -> None:
        """Draws the order of (0-based) `epoch`."""
        self.epoch = check_integer("epoch", epoch, minimum=0)
        order = np.arange(len(self.x))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(order)
        self._order = order

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A callback for `fit` that sets each epoch's order as it begins
        (including the epoch a resumed run starts from)."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch)
        )

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.x[rows], self.y[rows]
        if self.augmentation is not None:
            seed = int(
                np.random.default_rng((self.seed, self.epoch, index)).integers(2**31)
            )
            x = keras.ops.convert_to_numpy(
                self.augmentation(x, training=True, seed=seed)
            )
        return x, y

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
