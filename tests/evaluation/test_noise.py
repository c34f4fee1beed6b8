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


def test_evaluate_robustness_reports_noise_clipped_and_not():
    """`evaluate_robustness(noise_stds=...)` puts `noise_accuracy` at each
    std, clipped to the input range and not, into the report, its table and
    its dict; with noise, no attack is needed."""
    model, kernel, bias = _linear_classifier()
    rng = np.random.default_rng(1)
    x = rng.random((120, 5)).astype("float32")
    y = np.argmax(x @ kernel + bias, axis=1)
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.1], ["fgm"], noise_stds=(0.2, 0.6),
        noise_draws=2, seed=3, verbose=0, checks=False,
    )  # fmt: skip
    assert len(report.noise) == 4
    for std in (0.2, 0.6):
        for clip in ((0.0, 1.0), None):
            expected = kg.noise_accuracy(model, x, y, std, draws=2, clip=clip, seed=3)
            got = report.noise_accuracy(std, clipped=clip is not None)
            assert got == pytest.approx(expected.mean)
    assert report.noise_accuracy(0.6) < 1.0  # the noise moves predictions
    with pytest.raises(KeyError, match="std=0.4"):
        report.noise_accuracy(0.4)
    table = report.to_markdown()
    assert "| noise std | clipped to [0, 1] | not clipped |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 0.6 |"))
    assert f"{report.noise_accuracy(0.6, clipped=False):.2%}" in row
    assert "over 2 draws" in table
    assert report.to_dict()["noise"][0]["std"] == 0.2
    noise_only = kg.evaluate_robustness(
        model, x, y, attacks=(), noise_stds=0.2, noise_draws=2, seed=3, verbose=0
    )
    assert noise_only.rows == [] and noise_only.noise == report.noise[:2]
    assert "| norm | eps |" not in noise_only.to_markdown()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"noise_stds": (0.1, -1.0)}, "noise_stds=(0.1, -1.0)"),
        ({"noise_stds": "0.1"}, "noise_stds='0.1'"),
        ({"noise_stds": (0.1,), "noise_draws": 0}, "noise_draws"),
        ({"attacks": ()}, "or give `noise_stds`"),
    ],
)
def test_evaluate_robustness_refuses_bad_noise_arguments(kwargs, message):
    model, _, _ = _linear_classifier()
    x = np.full((4, 5), 0.5, "float32")
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        kg.evaluate_robustness(model, x, np.zeros(4, "int32"), verbose=0, **kwargs)
