"""Pad-crop-flip augmentation, per image, on every backend."""

from __future__ import annotations

import keras
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_bool, check_choice, check_integer

#: How `PadCropFlip` fills the border: zeros (torchvision's
#: `RandomCrop(32, padding=4)`) or the image mirrored without repeating its
#: edge (`padding_mode="reflect"`).
PADDING_MODES = ("zero", "reflect")


@keras_gradreg_export("keras_gradreg.layers.PadCropFlip")
class PadCropFlip(keras.layers.Layer):
    """Pads each image by `padding` pixels, crops a random window of the
    original size and flips it left-right with probability 1/2; in
    inference, returns the images unchanged.

    The CIFAR-10 augmentation of the fast adversarial-training papers
    (torchvision's `RandomCrop(32, padding=4)` and `RandomHorizontalFlip`):
    every image draws its own window, uniform over the `(2 padding + 1)^2`
    offsets, and its own flip. Keras's `RandomCrop` draws one window per
    batch and, in inference, resizes a padded image rather than returning
    it, hence this layer, written with `keras.ops` so that it runs on
    TensorFlow, JAX and PyTorch, inside a model or on NumPy batches
    (`AugmentedBatches`).

    Inside a `GradRegModel`, the perturbation is taken on the images before
    augmentation; the recipes augment in the data pipeline instead, so that
    the perturbation ball lies around the image the network sees.

    Args:
        padding: pixels added on each side, >= 0 (4 in the papers).
        mode: "zero" or "reflect" (see `PADDING_MODES`).
        flip: whether to flip too.
        seed: seeds the layer's random draws (None: unseeded).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        images: a batch `(batch, height, width, channels)`.
        training: augment when True; return `images` unchanged otherwise.
        seed: an integer that fixes this call's draws (for a pipeline that
            replays its batches), or None for the layer's generator.

    Examples:
        >>> import numpy as np
        >>> layer = PadCropFlip(padding=4, seed=0)
        >>> x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
        >>> tuple(layer(x, training=True).shape)
        (2, 32, 32, 3)
        >>> bool(np.array_equal(layer(x, training=False), x))
        True
    """

    def __init__(
        self, padding: int = 4, mode: str = "zero", flip=True, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.padding = check_integer("padding", padding, minimum=0)
        self.mode = check_choice("mode", mode, PADDING_MODES)
        self.flip = check_bool("flip", flip)
        self.seed = check_integer("seed", seed, minimum=0, allow_none=True)
        self.generator = keras.random.SeedGenerator(self.seed)
        self.built = True

    def call(self, images, training=None, seed=None):
        if not training:
            return images
        if len(images.shape) != 4:
            raise ValueError(
                "PadCropFlip takes a batch of images (batch, height, width, "
                f"channels). Received: images.shape={tuple(images.shape)}"
            )
        size = 2 * self.padding + 1
        draws = keras.random.uniform(
            (ops.shape(images)[0], 3),
            seed=self.generator if seed is None else seed,
        )
        out = images
        if self.padding:
            offsets = ops.minimum(ops.floor(draws[:, :2] * size), size - 1)
            out = _crop(_pad(images, self.padding, self.mode), images.shape, offsets)
        if self.flip:
            flipped = ops.reshape(draws[:, 2] < 0.5, (-1, 1, 1, 1))
            out = ops.where(flipped, ops.flip(out, axis=2), out)
        return ops.cast(out, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "padding": self.padding,
            "mode": self.mode,
            "flip": self.flip,
            "seed": self.seed,
        }


def _pad(images, padding, mode):
    widths = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return ops.pad(images, widths, mode="constant" if mode == "zero" else "reflect")


def _crop(padded, shape, offsets):
    """Each padded image's window of `shape[1:3]` at its `(row, column)`
    offset, selected by one-hot matrices (exact, and the same program for a
    whole batch of different offsets on every backend)."""
    height, width = shape[1], shape[2]
    padded = ops.cast(padded, "float32")
    rows = ops.cast(offsets[:, :1], "int32") + ops.arange(height, dtype="int32")
    columns = ops.cast(offsets[:, 1:], "int32") + ops.arange(width, dtype="int32")
    pick_rows = ops.one_hot(rows, padded.shape[1], dtype="float32")
    pick_columns = ops.one_hot(columns, padded.shape[2], dtype="float32")
    out = ops.einsum("bip,bpqc->biqc", pick_rows, padded)
    return ops.einsum("bjq,biqc->bijc", pick_columns, out)
