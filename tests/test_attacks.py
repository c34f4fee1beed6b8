"""FGM on a linear softmax model, where dL/dx has a closed form."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _linear(seed=0, classes=3, features=5):
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(classes)])
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(features, classes)), rng.normal(size=classes)
    model.set_weights([w.astype("float32"), b.astype("float32")])
    return model, w, b


def _closed_form_gradient(w, b, x, y):
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p @ w.T


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", 3.0])
def test_fgm_is_the_closed_form_worst_case(norm):
    model, w, b = _linear()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, (20, 5)).astype("float32")
    y = rng.integers(0, 3, 20)
    g = _closed_form_gradient(w, b, x, y)
    eps = 0.1
    expected = x + np.asarray(
        kg.worst_case_perturbation(g.astype("float32"), norm, eps)
    )
    got = kg.fgm(model, x, y, norm, eps, loss=LOSS, batch_size=7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_fgsm_stays_in_the_ball_and_range_and_raises_the_loss():
    model, _, _ = _linear(2)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, (64, 5)).astype("float32")
    y = rng.integers(0, 3, 64)
    x_adv = kg.fgm(model, x, y, "linf", 0.2, loss=LOSS)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )
    before = keras.ops.convert_to_numpy(per_example(y, model.predict(x, verbose=0)))
    after = keras.ops.convert_to_numpy(per_example(y, model.predict(x_adv, verbose=0)))
    assert np.all(after >= before - 1e-6)


def test_fgsm_accuracy_uses_the_compiled_loss_and_drops_with_eps():
    model, _, _ = _linear(4)
    model.compile(loss=LOSS)
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 1.0, (200, 5)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # 100% clean accuracy
    accuracies = [kg.fgsm_accuracy(model, x, y, eps) for eps in (0.0, 0.05, 0.3)]
    assert accuracies[0] == 1.0
    assert accuracies[0] >= accuracies[1] >= accuracies[2]
    assert accuracies[2] < 0.9


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"eps": -0.1}, "eps=-0.1"),
        ({"norm": "l7"}, "norm='l7'"),
        ({"y": np.zeros(3)}, "len\\(y\\)=3"),
    ],
)
def test_bad_attack_arguments(kwargs, message):
    model, _, _ = _linear()
    args = {
        "x": np.zeros((4, 5), "float32"),
        "y": np.zeros(4, "int32"),
        "norm": "linf",
        "eps": 0.1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kg.fgm(model, args["x"], args["y"], args["norm"], args["eps"], loss=LOSS)


def test_uncompiled_model_without_loss_is_a_clear_error():
    model, _, _ = _linear()
    with pytest.raises(ValueError, match="loss="):
        kg.fgm(model, np.zeros((2, 5), "float32"), np.zeros(2, "int32"))
