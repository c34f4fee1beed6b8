"""`ScaledDropout`: dropout with a chosen factor on the kept units, as the
maxout papers' pylearn2 configurations drop their input pixels."""

from __future__ import annotations

import keras
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export


@keras_gradreg_export("keras_gradreg.layers.ScaledDropout")
class ScaledDropout(keras.layers.Layer):
    """Dropout whose kept units are multiplied by a chosen `scale`.

    In training, `y = x * m * scale` with `m ~ Bernoulli(1 - rate)`; at
    inference `y = x`. Keras's `Dropout` is the case
    `scale = 1 / (1 - rate)` (the default here), which keeps the expected
    activation equal in training and inference. The maxout papers'
    pylearn2 configurations drop 20% of the *input* pixels with
    `input_scales: 1`, i.e. `scale=1`: the training inputs are dimmed
    rather than rescaled.

    Args:
        rate: the fraction of units dropped, in [0, 1).
        scale: the factor on the kept units, > 0; default `1 / (1 - rate)`.
        seed: optional seed of the dropout mask.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Examples:
        >>> import numpy as np
        >>> layer = ScaledDropout(0.2, scale=1.0, seed=0)
        >>> x = np.ones((2, 1000), "float32")
        >>> bool(np.all(np.isin(layer(x, training=True), [0.0, 1.0])))
        True
    """

    def __init__(self, rate, scale=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not 0 <= rate < 1
        ):
            raise ValueError(
                f"Argument `rate` must be a number in [0, 1). Received: rate={rate!r}"
            )
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0
        ):
            raise ValueError(
                f"Argument `scale` must be a number > 0 or None. Received: scale={scale!r}"
            )
        self.rate = float(rate)
        self.scale = None if scale is None else float(scale)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        # keras.random.dropout keeps x / (1 - rate); rescale to x * scale.
        dropped = keras.random.dropout(inputs, self.rate, seed=self.seed_generator)
        if self.scale is None:
            return dropped
        return dropped * ops.cast((1.0 - self.rate) * self.scale, dropped.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        base_config = super().get_config()
        config = {"rate": self.rate, "scale": self.scale, "seed": self.seed}
        return {**base_config, **config}
