"""Accuracy under additive Gaussian noise (the paper's Table IV)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, check_input_range, check_integer
from keras_gradreg.src.evaluation.attacks import correct_predictions


@keras_gradreg_export("keras_gradreg.NoiseAccuracy")
class NoiseAccuracy(NamedTuple):
    """Accuracy under Gaussian noise, over several draws of the noise.

    Attributes:
        std: the noise's standard deviation.
        clip: the range the noisy inputs were clipped to, or None.
        mean: mean accuracy over the draws.
        spread: standard deviation of the accuracy over the draws.
        draws: the accuracy of each draw.
    """

    std: float
    clip: tuple | None
    mean: float
    spread: float
    draws: list

    @property
    def error(self) -> float:
        """`1 - mean`: the test error under the noise."""
        return 1.0 - self.mean


@keras_gradreg_export("keras_gradreg.noise_accuracy")
def noise_accuracy(
    model,
    x,
    y,
    std: float,
    *,
    draws: int = 5,
    clip=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
) -> NoiseAccuracy:
    """Classification accuracy on `x + n`, `n ~ N(0, std^2 I)`, per draw.

    Lyu et al.'s Table IV reports test error under additive Gaussian noise
    of std 0.1 and 0.3 on MNIST scaled to [0, 1]; the paper does not say
    whether the noisy image is clipped back to [0, 1], so both are
    available: `clip=(0, 1)` (a valid image, the default) or `clip=None`.
    Each of the `draws` draws uses its own noise from one seeded generator,
    so results repeat exactly for the same `seed`.

    Args:
        model: a classifier (softmax or logits outputs).
        x: inputs.
        y: integer labels.
        std: the noise's standard deviation, >= 0 (0 gives clean accuracy).
        draws: how many noise draws to average, >= 1.
        clip: `(low, high)` to clip the noisy inputs to, or None.
        seed: seed of the noise.
        batch_size: prediction batch size.

    Returns:
        A `NoiseAccuracy` (mean and spread over draws, each draw's accuracy).

    Raises:
        ValueError: for a negative or non-finite `std`, a bad `draws` or
            `clip`, or mismatched `x` and `y`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> model.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
        >>> noise_accuracy(model, x, [0, 1], std=0.0).mean
        1.0
    """
    if (
        isinstance(std, bool)
        or not isinstance(std, (int, float, np.floating))
        or not math.isfinite(std)
        or std < 0
    ):
        raise ValueError(
            f"Argument `std` must be a finite number >= 0. Received: std={std!r}"
        )
    draws = check_integer("draws", draws, types=(int, np.integer))
    try:
        clip = check_input_range(clip)
    except ValueError:
        raise ValueError(
            "Argument `clip` must be None or a pair (low, high) with low < high. "
            f"Received: clip={clip!r}"
        ) from None
    x, y = check_data(x, y, None)
    if not np.all(np.isfinite(x)):
        raise ValueError("Argument `x` must be finite. Received: x with NaN or inf")
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(draws if std > 0 else 1):
        noisy = x + rng.normal(0.0, std, x.shape).astype(x.dtype)
        if clip is not None:
            noisy = np.clip(noisy, *clip)
        correct = correct_predictions(model, noisy, y, batch_size)
        accuracies.append(float(np.mean(correct)))
    return NoiseAccuracy(
        std=float(std),
        clip=clip,
        mean=float(np.mean(accuracies)),
        spread=float(np.std(accuracies)),
        draws=accuracies,
    )
