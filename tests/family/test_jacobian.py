"""Jacobian regularization, `L + (sigma/2) ||d logits / dx||_F^2`: the exact
norm and its random-projection estimate against float64 finite differences
of the independent NumPy objective (tests/reference.py; the random
directions are fixed so that both see them)."""

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


def _objective(params, x, y, w, *, sigma, alpha, directions=None):
    jacobians = reference.jacobians(params, x)  # (batch, classes, inputs)
    if directions is None:
        squared = np.sum(jacobians**2, axis=(1, 2))
    else:
        classes = jacobians.shape[1]
        rows = np.einsum("ic,icj->ij", directions, jacobians)
        squared = classes * np.sum(rows**2, axis=1)
    penalty = 0.5 * sigma * np.mean(squared)  # every row, unweighted
    return np.mean(w * reference.example_losses(params, x, y)) + (1 - alpha) * penalty


@pytest.mark.parametrize("projections", [None, 1])
@pytest.mark.parametrize("alpha,weighted", [(0.0, False), (0.3, True)])
def test_weight_gradient_matches_finite_differences(
    float64, monkeypatch, projections, alpha, weighted
):
    sigma = 0.4
    x, y, w = _data(seed=29)
    start = np.random.default_rng(8).normal(size=x.shape)
    fix_start(monkeypatch, start, "l2")
    directions = start[:, :3] / np.linalg.norm(start[:, :3], axis=1, keepdims=True)
    model = _tiny_model(
        19, sigma=sigma, alpha=alpha, form=kg.forms.Jacobian(projections=projections)
    )
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    weights = w if weighted else np.ones_like(w)
    expected = reference.finite_difference_gradient(
        lambda ps: _objective(
            ps, x, y, weights, sigma=sigma, alpha=alpha,
            directions=None if projections is None else directions,
        ),
        params,
    )  # fmt: skip
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_the_projections_estimate_the_frobenius_norm_without_bias():
    # C E_v ||v^T J||^2 = ||J||_F^2 for v uniform on the sphere: the blocks
    # of a Gaussian vector the form draws its directions from, normalized.
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(3, 5))
    start = rng.normal(size=(200_000, 3))
    v = start / np.linalg.norm(start, axis=1, keepdims=True)
    estimate = 3 * np.mean(np.sum((v @ jacobian) ** 2, axis=1))
    np.testing.assert_allclose(estimate, np.sum(jacobian**2), rtol=0.01)


def test_jacobian_trains_semi_supervised_round_trips_and_refuses(tmp_path):
    logs, model, loaded = fit_and_reload(
        tmp_path, "jacobian", logits=True, sigma=0.1, labeled_rows=4
    )
    assert logs["adv_loss"][0] > 0.0  # the penalty, on the unlabeled rows
    assert loaded.regularizer.form == kg.forms.Jacobian()
    with pytest.raises(ValueError, match="Received: norm='linf'"):
        kg.GradientRegularizer(norm="linf", form="jacobian")
    with pytest.raises(ValueError, match="Received: projections=0"):
        kg.forms.Jacobian(projections=0)
    # Three projections of 3 outputs need 9 input coordinates, not 6.
    with pytest.raises(ValueError, match="Received: projections=3"):
        fit_and_reload(tmp_path, kg.forms.Jacobian(projections=3), sigma=0.1)
