"""The squared-norm penalty `L + sigma ||dL/dx||_q^2`: its weight update
against float64 finite differences of the independent NumPy objective."""

import math

import numpy as np
import pytest

import keras_gradreg as kg
from tests import reference
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0}


def _objective(params, x, y, w, *, p, sigma, alpha):
    clean = reference.example_losses(params, x, y)
    g = reference.input_gradients(params, x, y)
    squared = np.linalg.norm(g, ord=reference.dual(p), axis=1) ** 2
    return np.mean(w * (clean + (1 - alpha) * sigma * squared))


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("alpha,weighted", [(0.0, False), (0.4, True)])
def test_weight_gradient_matches_finite_differences(float64, norm, alpha, weighted):
    sigma = 0.3
    x, y, w = _data(seed=41)
    model = _tiny_model(7, norm=norm, sigma=sigma, form="squared_penalty", alpha=alpha)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    weights = w if weighted else np.ones_like(w)
    expected = reference.finite_difference_gradient(
        lambda ps: _objective(
            ps, x, y, weights, p=NORMS[norm], sigma=sigma, alpha=alpha
        ),
        params,
    )
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    # Not the penalty form: the norm enters squared.
    penalty = _tiny_model(7, norm=norm, sigma=sigma, form="penalty", alpha=alpha)
    other = _library_gradient(penalty, x, y, w if weighted else None)
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(got, other))


def test_the_shorthand_and_the_object_are_one_member():
    reg = kg.GradientRegularizer(norm="l2", sigma=0.01, form="squared_penalty")
    assert reg.form == kg.forms.SquaredPenalty()
    assert kg.GradientRegularizer.from_config(reg.get_config()) == reg
