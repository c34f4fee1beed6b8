"""The maxout papers' preprocessing of CIFAR-10: global contrast
normalization and ZCA whitening (pylearn2's `GlobalContrastNormalization`
and `ZCA`)."""

from __future__ import annotations

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_number


@keras_gradreg_export("keras_gradreg.datasets.global_contrast_normalize")
def global_contrast_normalize(
    x,
    scale: float = 55.0,
    sqrt_bias: float = 0.0,
    *,
    use_std: bool = False,
    epsilon: float = 1e-8,
):
    """Global contrast normalization, per image (pylearn2's
    `global_contrast_normalize`):

    `x_i <- (x_i - mean(x_i)) / d_i` with
    `d_i = sqrt(sqrt_bias + ||x_i - mean(x_i)||^2) / scale`, or with
    `use_std=True` `d_i = sqrt(sqrt_bias + var(x_i)) / scale` (the sample
    variance, over n - 1, as pylearn2 and Coates et al.'s MATLAB code);
    an image whose `d_i < epsilon` is centered but not divided.

    The defaults are the maxout papers' CIFAR-10 setup, pylearn2's
    `CIFAR10(gcn=55.)`: every image's vector norm becomes 55, about 1 per
    pixel of a 32 x 32 x 3 image. `use_std=True, sqrt_bias=10` is Coates,
    Lee and Ng (2011)'s, which makes each pixel's spread about `scale`.

    Args:
        x: images (N, ...), any float dtype.
        scale: the norm (or standard deviation) each image gets, > 0.
        sqrt_bias: added under the square root, >= 0.
        use_std: divide by the standard deviation instead of the norm.
        epsilon: the smallest divisor applied, >= 0.

    Returns:
        float32 array shaped like `x`.

    Raises:
        ValueError: if `scale`, `sqrt_bias` or `epsilon` is out of range.

    Examples:
        >>> import numpy as np
        >>> out = global_contrast_normalize(np.arange(8.0).reshape(2, 4), scale=1.0)
        >>> np.round(np.linalg.norm(out, axis=1), 6).tolist()
        [1.0, 1.0]
    """
    scale = check_number("scale", scale, exclusive=True)
    sqrt_bias = check_number("sqrt_bias", sqrt_bias)
    epsilon = check_number("epsilon", epsilon)
    x = np.asarray(x, dtype="float64")
    flat = x.reshape(len(x), -1)
    centered = flat - flat.mean(axis=1, keepdims=True)
    spread = (
        centered.var(axis=1, ddof=1, keepdims=True)
        if use_std
        else np.square(centered).sum(axis=1, keepdims=True)
    )
    divisor = np.sqrt(sqrt_bias + spread) / scale
    divisor[divisor < epsilon] = 1.0
    return (centered / divisor).reshape(x.shape).astype("float32")


@keras_gradreg_export("keras_gradreg.datasets.ZCAWhitening")
class ZCAWhitening:
    """ZCA whitening fitted on training images: `x -> (x - mean) W` with
    `W = U diag(1 / sqrt(s + epsilon)) U^T` from the eigendecomposition
    `U diag(s) U^T` of the training covariance.

    The default `epsilon` is pylearn2's `ZCA` `filter_bias` (0.1), used on
    the maxout papers' CIFAR-10 after `global_contrast_normalize` (about
    unit variance per pixel): directions of the data with variance well
    below 0.1, mostly pixel noise, are damped rather than blown up to unit
    variance. It is in the data's units: scale it with the data.

    Args:
        epsilon: added to the eigenvalues, >= 0 (0 whitens exactly).

    Examples:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(500, 3)) @ [[2, 1, 0], [0, 1, 0], [0, 0, 3]]
        >>> white = ZCAWhitening(epsilon=0.0).fit(x).transform(x)
        >>> np.allclose(np.cov(white, rowvar=False, bias=True), np.eye(3), atol=1e-6)
        True
    """

    def __init__(self, epsilon: float = 0.1):
        self.epsilon = check_number("epsilon", epsilon)
        self.mean_ = None
        self.matrix_ = None

    def fit(self, x) -> ZCAWhitening:
        flat = np.asarray(x, dtype="float64").reshape(len(x), -1)
        self.mean_ = flat.mean(axis=0)
        covariance = np.cov(flat - self.mean_, rowvar=False, bias=True)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.maximum(eigenvalues, 0.0)
        self.matrix_ = (
            eigenvectors / np.sqrt(eigenvalues + self.epsilon)
        ) @ eigenvectors.T
        return self

    def transform(self, x):
        if self.matrix_ is None:
            raise ValueError("ZCAWhitening.transform called before fit.")
        x = np.asarray(x, dtype="float64")
        flat = x.reshape(len(x), -1)
        return ((flat - self.mean_) @ self.matrix_).reshape(x.shape).astype("float32")
