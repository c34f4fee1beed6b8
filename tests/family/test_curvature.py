"""CURE, `L + weight ||dL/dx(x + r*) - dL/dx(x)||^2`: its weight update
against float64 finite differences of the independent NumPy objective
(tests/reference.py), both gradients differentiated, r* held constant."""

import math

import numpy as np
import pytest

import keras_gradreg as kg
from tests import reference
from tests.helpers import fit_and_reload
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0}


def _objective(params, params0, x, y, w, *, p, sigma, alpha, weight, clip):
    z = reference.worst_case(reference.input_gradients(params0, x, y), p, sigma)
    moved = np.clip(x + z, *clip) if clip else x + z
    change = reference.input_gradients(params, moved, y) - reference.input_gradients(
        params, x, y
    )
    curvature = weight * np.sum(change**2, axis=1)
    return np.mean(
        w * (reference.example_losses(params, x, y) + (1 - alpha) * curvature)
    )


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize(
    "alpha,weighted,clip",
    [
        (0.0, False, None),
        (0.4, True, (0.0, 1.0)),
        (0.4, False, (0.0, 1.0)),
        (0.0, True, None),
    ],
)
def test_weight_gradient_matches_finite_differences(
    float64, norm, alpha, weighted, clip
):
    sigma, weight = 0.3, 2.0
    x, y, w = _data(seed=17)
    model = _tiny_model(
        13, norm=norm, sigma=sigma, alpha=alpha, input_range=clip,
        form=kg.forms.Curvature(weight=weight),
    )  # fmt: skip
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    weights = w if weighted else np.ones_like(w)
    expected = reference.finite_difference_gradient(
        lambda ps: _objective(
            ps, params, x, y, weights, p=NORMS[norm], sigma=sigma, alpha=alpha,
            weight=weight, clip=clip,
        ),
        params,
    )  # fmt: skip
    got = _library_gradient(model, x, y, w if weighted else None)
    # The float rounding floor (RTOL) is relative to the gradient's scale:
    # the squared change of the gradient spreads it to the small entries.
    scale = max(np.abs(e).max() for e in expected)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL + RTOL * scale)


def test_curvature_trains_round_trips_and_refuses_bad_arguments(tmp_path):
    logs, _, loaded = fit_and_reload(tmp_path, "curvature", norm="linf", sigma=0.1)
    assert logs["adv_loss"][0] > logs["clean_loss"][0]
    assert loaded.regularizer.form == kg.forms.Curvature()
    with pytest.raises(ValueError, match="Received: weight=nan"):
        kg.forms.Curvature(weight=float("nan"))
