"""MART: the boosted cross-entropy at the PGD point plus the divergence
from the clean prediction weighted by `1 - p_y(x)`. Its weight update
against float64 finite differences of the independent NumPy objective
(tests/reference.py; the random start fixed so that both see it), both
terms differentiated through p(x) and p(x + r)."""

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


def _mart(params, x, y, r, beta):
    """Each example's MART objective, as Wang et al.'s code computes it."""
    rows = np.arange(len(y))
    clean = reference.probabilities(params, x)
    moved = reference.probabilities(params, x + r)
    others = moved.copy()
    others[rows, y] = 0.0
    boosted = reference.example_losses(params, x + r, y) - np.log(
        1.0001 - others.max(axis=1)
    )
    divergence = reference.kl(clean, moved)
    return boosted + beta * divergence * (1.0 - clean[rows, y])


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_weight_gradient_matches_finite_differences(
    float64, monkeypatch, norm, weighted
):
    sigma, beta, steps, step_size, clip = 0.3, 2.0, 3, 0.15, (0.0, 1.0)
    x, y, w = _data(seed=41)
    unit = np.random.default_rng(8).uniform(-1.0, 1.0, x.shape)
    if norm == "l2":
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    fix_start(monkeypatch, unit, norm)
    form = kg.forms.MART(beta=beta, steps=steps, step_size=step_size)
    model = _tiny_model(23, norm=norm, sigma=sigma, input_range=clip, form=form)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    r = reference.multistep_perturbation(
        params, x, y, p=NORMS[norm], sigma=sigma, steps=steps, step_size=step_size,
        clip=clip, start=sigma * unit,
    )  # fmt: skip
    assert np.all(np.abs(r) > 0)  # the ascent moved every coordinate
    weights = w if weighted else np.ones_like(w)

    def objective(ps):
        return np.mean(weights * _mart(ps, x, y, r, beta))

    expected = reference.finite_difference_gradient(objective, params)
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_one_hot_labels_train_as_integer_labels_do():
    """The margin and the weight read the true class from one-hot labels
    (categorical cross-entropy) as from integer ones."""
    import keras

    from keras_gradreg.src.training.objective import one_hot_labels

    scores = keras.ops.convert_to_tensor(np.zeros((3, 4), "float32"))
    integer = one_hot_labels(keras.ops.convert_to_tensor([2, 0, 3]), scores)
    column = one_hot_labels(keras.ops.convert_to_tensor([[2], [0], [3]]), scores)
    onehot = one_hot_labels(keras.ops.convert_to_tensor(np.eye(4)[[2, 0, 3]]), scores)
    expected = np.eye(4)[[2, 0, 3]]
    for labels in (integer, column, onehot):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(labels), expected)


def test_mart_trains_round_trips_and_refuses_what_it_cannot(tmp_path):
    logs, _, loaded = fit_and_reload(
        tmp_path, kg.forms.MART(beta=3.0, steps=2), hidden=None, norm="linf",
        sigma=0.1, input_range=(0, 1),
    )  # fmt: skip
    assert logs["adv_loss"][0] > 0.0  # the boosted cross-entropy
    assert logs["loss"][0] >= logs["adv_loss"][0]  # plus a divergence >= 0
    assert loaded.regularizer.form == kg.forms.MART(beta=3.0, steps=2)
    assert kg.GradientRegularizer(form="mart").form == kg.forms.MART()
    with pytest.raises(ValueError, match="Received: alpha=0.5"):
        kg.GradientRegularizer(form="mart", alpha=0.5)
    with pytest.raises(ValueError, match="Received: beta=-1"):
        kg.forms.MART(beta=-1)
    with pytest.raises(ValueError, match="Received: steps=0"):
        kg.forms.MART(steps=0)
