"""LLR, `L(x) + lambda |L(x + d) - L(x) - d.g| + mu |d.g|` with d from projected
ascent on the residual: its weight update against float64 finite
differences of the independent NumPy objective (tests/reference.py; the
random start is fixed so that both see it), every factor but d
differentiated."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests import reference
from tests.family.test_gradalign import fix_start
from tests.helpers import fit_and_reload
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0}


def _residual_ascent(params, x, y, *, p, sigma, steps, step_size, clip, start):
    """The reference's maximizer of `|L(x + d) - L(x) - d . g(x)|`."""
    clean = reference.example_losses(params, x, y)
    g = reference.input_gradients(params, x, y)

    def gradient(moved):
        d = moved - x
        residual = reference.example_losses(params, moved, y) - clean - np.sum(d * g, 1)
        change = reference.input_gradients(params, moved, y) - g
        return np.sign(residual)[:, None] * change

    return reference.multistep_perturbation(
        params, x, y, p=p, sigma=sigma, steps=steps, step_size=step_size,
        clip=clip, start=start, gradient=gradient,
    )  # fmt: skip


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_weight_gradient_matches_finite_differences(
    float64, monkeypatch, norm, weighted
):
    sigma, lam, mu, steps, step_size, clip = 0.3, 2.0, 1.5, 3, 0.15, (0.0, 1.0)
    x, y, w = _data(seed=41)
    unit = np.random.default_rng(8).uniform(-1.0, 1.0, x.shape)
    fix_start(monkeypatch, unit, norm)
    form = kg.forms.LLR(
        weight=lam, gradient_weight=mu, steps=steps, step_size=step_size
    )
    model = _tiny_model(23, norm=norm, sigma=sigma, input_range=clip, form=form)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    d = _residual_ascent(
        params, x, y, p=NORMS[norm], sigma=sigma, steps=steps,
        step_size=step_size, clip=clip, start=sigma * unit,
    )  # fmt: skip
    assert np.all(np.abs(d) > 0)  # the ascent moved every coordinate
    weights = w if weighted else np.ones_like(w)

    def objective(ps):
        clean = reference.example_losses(ps, x, y)
        linear = np.sum(d * reference.input_gradients(ps, x, y), 1)
        residual = reference.example_losses(ps, x + d, y) - clean - linear
        return np.mean(weights * (clean + lam * np.abs(residual) + mu * np.abs(linear)))

    expected = reference.finite_difference_gradient(objective, params)
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_the_ascent_finds_a_larger_residual_than_its_start(float64):
    """The maximizer the test above pins raises the residual it climbs."""
    x, y, _ = _data(seed=41)
    model = _tiny_model(23)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    start = 0.3 * np.random.default_rng(8).uniform(-1.0, 1.0, x.shape)
    clean = reference.example_losses(params, x, y)
    g = reference.input_gradients(params, x, y)

    def residual(d):
        moved = reference.example_losses(params, x + d, y)
        return np.abs(moved - clean - np.sum(d * g, 1))

    d = _residual_ascent(
        params, x, y, p=math.inf, sigma=0.3, steps=5, step_size=0.1,
        clip=None, start=start,
    )  # fmt: skip
    assert np.mean(residual(d)) > np.mean(residual(start))


def test_llr_trains_round_trips_and_refuses_what_it_cannot(tmp_path):
    logs, _, loaded = fit_and_reload(
        tmp_path, "llr", norm="linf", sigma=0.1, input_range=(0, 1)
    )
    assert logs["adv_loss"][0] > 0.0  # the mean residual
    assert loaded.regularizer.form == kg.forms.LLR()
    with pytest.raises(ValueError, match="Received: alpha=0.5"):
        kg.GradientRegularizer(form="llr", alpha=0.5)
    with pytest.raises(ValueError, match="Received: gradient_weight=-1"):
        kg.forms.LLR(gradient_weight=-1)
    with pytest.raises(ValueError, match="Received: steps=0"):
        kg.forms.LLR(steps=0)


def test_llr_refuses_a_model_compiled_with_several_losses():
    inputs = keras.Input((4,))
    outputs = [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)]
    model = kg.GradRegModel(inputs, outputs, form="llr", norm="linf", sigma=0.1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("sgd", [loss, loss])
    x = np.zeros((4, 4), "float32")
    y = np.zeros(4, "int32")
    with pytest.raises(ValueError, match="compile the model with one loss"):
        model.train_on_batch(x, [y, y])
