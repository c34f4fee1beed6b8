"""TRADES, `L(x) + beta KL(p(x) || p(x + r))` with r from projected ascent
on the divergence: its weight update against float64 finite differences
of the independent NumPy objective (tests/reference.py; the random start
is fixed so that both see it), the divergence differentiated through
p(x) too."""

import math

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


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_weight_gradient_matches_finite_differences(
    float64, monkeypatch, norm, weighted
):
    sigma, beta, steps, step_size, xi, clip = 0.3, 2.0, 3, 0.15, 0.05, (0.0, 1.0)
    x, y, w = _data(seed=37)
    unit = np.random.default_rng(6).uniform(-1.0, 1.0, x.shape)
    fix_start(monkeypatch, unit, norm)
    form = kg.forms.TRADES(beta=beta, steps=steps, step_size=step_size, xi=xi)
    model = _tiny_model(21, norm=norm, sigma=sigma, input_range=clip, form=form)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    p0 = reference.probabilities(params, x)
    r = reference.multistep_perturbation(
        params, x, y, p=NORMS[norm], sigma=sigma, steps=steps, step_size=step_size,
        clip=clip, start=xi * unit,
        gradient=lambda moved: reference.kl_input_gradients(params, moved, p0),
    )  # fmt: skip
    assert np.all(np.abs(r) > 0)  # the ascent moved every coordinate
    weights = w if weighted else np.ones_like(w)

    def objective(ps):
        clean = np.mean(weights * reference.example_losses(ps, x, y))
        divergence = reference.kl(
            reference.probabilities(ps, x), reference.probabilities(ps, x + r)
        )
        return clean + beta * np.mean(divergence)

    expected = reference.finite_difference_gradient(objective, params)
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_trades_trains_round_trips_and_refuses_what_it_cannot(tmp_path):
    logs, _, loaded = fit_and_reload(
        tmp_path, "trades", hidden=None, norm="linf", sigma=0.1, input_range=(0, 1)
    )
    assert logs["adv_loss"][0] > 0.0  # the divergence
    assert loaded.regularizer.form == kg.forms.TRADES()
    with pytest.raises(ValueError, match="Received: alpha=0.5"):
        kg.GradientRegularizer(form="trades", alpha=0.5)
    with pytest.raises(ValueError, match="Received: beta=-2"):
        kg.forms.TRADES(beta=-2)
