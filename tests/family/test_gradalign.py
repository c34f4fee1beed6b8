"""GradAlign: FGSM's loss plus the misalignment of the input gradients at x
and at a random point of the ball, against float64 finite differences of
the independent NumPy objective (tests/reference.py; the random point is
fixed so that both see it)."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family import multistep
from tests import reference
from tests.helpers import fit_and_reload
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0}


def fix_start(monkeypatch, unit, expected_norm):
    """Makes the step's random start `unit` (a point of the unit ball)."""

    def fixed_start(leaves, norm, seed):
        assert norm == expected_norm
        return [keras.ops.convert_to_tensor(unit, leaves[0].dtype)]

    monkeypatch.setattr(multistep, "random_unit_start", fixed_start)


def _objective(params, params0, x, y, w, *, p, sigma, alpha, weight, step, eta, clip):
    g0 = reference.input_gradients(params0, x, y)  # held constant
    r = reference.worst_case(g0, p, step * sigma)
    clean = reference.example_losses(params, x, y)
    adv = reference.example_losses(params, np.clip(x + r, *clip), y)
    g = reference.input_gradients(params, np.clip(x + eta, *clip), y)
    cosine = np.sum(g0 * g, 1) / (
        np.linalg.norm(g0, axis=1) * np.linalg.norm(g, axis=1)
    )
    return np.mean(w * (alpha * clean + (1 - alpha) * adv + weight * (1 - cosine)))


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("alpha,weighted", [(0.0, False), (0.3, True)])
def test_weight_gradient_matches_finite_differences(
    float64, monkeypatch, norm, alpha, weighted
):
    sigma, weight, step, clip = 0.2, 0.7, 1.25, (0.0, 1.0)
    x, y, w = _data(seed=23)
    x[:, 1] = 0.97  # some points of the ball leave the input range
    unit = np.random.default_rng(4).uniform(-1.0, 1.0, x.shape)
    fix_start(monkeypatch, unit, norm)
    model = _tiny_model(
        11, norm=norm, sigma=sigma, alpha=alpha, input_range=clip,
        form=kg.forms.GradAlign(weight=weight, step=step),
    )  # fmt: skip
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    weights = w if weighted else np.ones_like(w)
    settings = dict(p=NORMS[norm], sigma=sigma, alpha=alpha, weight=weight, step=step)
    expected = reference.finite_difference_gradient(
        lambda ps: _objective(
            ps, params, x, y, weights, **settings, eta=sigma * unit, clip=clip
        ),
        params,
    )
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    # The alignment term moves the update: not FGSM training alone.
    fgsm = _tiny_model(11, norm=norm, sigma=sigma, alpha=alpha, input_range=clip,
                       form=kg.forms.GradAlign(weight=0.0, step=step))  # fmt: skip
    other = _library_gradient(fgsm, x, y, w if weighted else None)
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(got, other))


def test_cosine_similarity_is_one_for_parallel_rows_and_zero_for_a_zero_row():
    from keras_gradreg.src.family.forms.gradalign import cosine_similarity

    a = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0]], "float32")
    b = np.array([[2.0, 4.0], [1.0, 1.0], [0.0, 3.0]], "float32")
    np.testing.assert_allclose(
        np.asarray(cosine_similarity(a, b)), [1, 0, 0], atol=1e-6
    )


def test_gradalign_trains_round_trips_and_refuses_bad_arguments(tmp_path):
    logs, model, loaded = fit_and_reload(
        tmp_path, "gradalign", hidden=None, norm="linf", sigma=0.1, input_range=(0, 1)
    )
    assert logs["adv_loss"][0] > logs["clean_loss"][0]
    assert loaded.regularizer == model.regularizer
    assert loaded.regularizer.form == kg.forms.GradAlign()
    with pytest.raises(ValueError, match="Received: weight=-1"):
        kg.forms.GradAlign(weight=-1)
    with pytest.raises(ValueError, match="Received: step=0"):
        kg.forms.get("gradalign").replace(step=0)
