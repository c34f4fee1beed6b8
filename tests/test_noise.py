"""Accuracy under additive Gaussian noise, against a NumPy computation."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg


def _linear_classifier():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(5, 3)).astype("float32")
    bias = rng.normal(size=3).astype("float32")
    model.set_weights([kernel, bias])
    return model, kernel, bias


@pytest.mark.parametrize("clip", [(0.0, 1.0), None])
def test_noise_accuracy_matches_numpy(clip):
    model, kernel, bias = _linear_classifier()
    rng = np.random.default_rng(0)
    x = rng.random((200, 5)).astype("float32")
    y = np.argmax(x @ kernel + bias, axis=1)  # clean accuracy 100%
    result = kg.noise_accuracy(model, x, y, std=0.3, draws=3, clip=clip, seed=7)
    noise_rng = np.random.default_rng(7)
    expected = []
    for _ in range(3):
        noisy = x + noise_rng.normal(0.0, 0.3, x.shape).astype("float32")
        if clip is not None:
            noisy = np.clip(noisy, *clip)
        expected.append(np.mean(np.argmax(noisy @ kernel + bias, axis=1) == y))
    np.testing.assert_allclose(result.draws, expected, atol=1.5 / len(x))
    assert result.mean == pytest.approx(np.mean(result.draws))
    assert result.error == pytest.approx(1 - result.mean)
    assert result.mean < 1.0  # the noise does move predictions
    assert kg.noise_accuracy(model, x, y, std=0.0).mean == 1.0
    again = kg.noise_accuracy(model, x, y, std=0.3, draws=3, clip=clip, seed=7)
    assert again.draws == result.draws


@pytest.mark.parametrize(
    "kwargs, name",
    [({"std": -0.1}, "std"), ({"std": float("nan")}, "std"), ({"draws": 0}, "draws"),
     ({"clip": (1.0, 0.0)}, "clip")],
)  # fmt: skip
def test_noise_accuracy_refuses_bad_arguments(kwargs, name):
    model, _, _ = _linear_classifier()
    x, y = np.zeros((4, 5), "float32"), np.zeros(4, "int32")
    with pytest.raises(ValueError, match=name):
        kg.noise_accuracy(model, x, y, **{"std": 0.1, **kwargs})
