"""Dual exponents, per-example norms and worst-case perturbations against
NumPy, on every backend."""

import math

import numpy as np
import pytest
from keras import ops

from keras_gradreg.src.family import norms

P_VALUES = {"linf": math.inf, "l2": 2.0, "l1": 1.0, 3.0: 3.0, 1.5: 1.5}


@pytest.mark.parametrize(
    "norm,expected",
    [
        ("linf", "linf"),
        ("inf", "linf"),
        ("L2", "l2"),
        (1, "l1"),
        (2.0, "l2"),
        (math.inf, "linf"),
        (3, 3.0),
    ],
)
def test_canonical_norm(norm, expected):
    assert norms.canonical_norm(norm) == expected


@pytest.mark.parametrize("bad", ["l3", "", 0.99, -1, float("nan"), None, True, [2]])
def test_bad_norm_names_the_value(bad):
    with pytest.raises(ValueError, match="norm="):
        norms.canonical_norm(bad)


@pytest.mark.parametrize(
    "norm,q", [("linf", 1.0), ("l2", 2.0), ("l1", math.inf), (3.0, 1.5), (1.5, 3.0)]
)
def test_dual_exponent(norm, q):
    assert norms.dual_exponent(norm) == pytest.approx(q)


def _gradients(seed=0, shapes=((5, 3, 4),)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


@pytest.mark.parametrize("norm", list(P_VALUES))
def test_per_example_norm_matches_numpy(norm):
    (g,) = _gradients()
    q = norms.dual_exponent(norm)
    expected = np.linalg.norm(g.reshape(5, -1), ord=q, axis=1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(norms.per_example_norm(g, q)), expected, rtol=1e-5
    )


@pytest.mark.parametrize("norm", list(P_VALUES))
def test_worst_case_attains_the_dual_norm_on_the_ball(norm):
    """Hölder: ||r*||_p = sigma and g . r* = sigma ||g||_q."""
    (g,) = _gradients(1)
    sigma = 0.3
    r = ops.convert_to_numpy(norms.worst_case_perturbation(g, norm, sigma)).reshape(
        5, -1
    )
    flat = g.reshape(5, -1)
    np.testing.assert_allclose(
        np.linalg.norm(r, ord=P_VALUES[norm], axis=1), sigma, rtol=1e-5
    )
    dual = np.linalg.norm(flat, ord=norms.dual_exponent(norm), axis=1)
    np.testing.assert_allclose((r * flat).sum(axis=1), sigma * dual, rtol=1e-5)


@pytest.mark.parametrize("norm", list(P_VALUES))
def test_worst_case_beats_random_points_of_the_ball(norm):
    (g,) = _gradients(2, shapes=((1, 6),))
    best = float(
        (ops.convert_to_numpy(norms.worst_case_perturbation(g, norm, 1.0)) * g).sum()
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        r = rng.normal(size=(1, 6))
        r /= np.linalg.norm(r, ord=P_VALUES[norm], axis=1, keepdims=True)
        assert (r * g).sum() <= best + 1e-5


def test_closed_forms_of_the_named_members():
    g = np.array([[0.5, -2.0, 1.0, 0.0]], "float32")
    wc = lambda norm: ops.convert_to_numpy(norms.worst_case_perturbation(g, norm, 0.1))
    np.testing.assert_allclose(wc("linf"), [[0.1, -0.1, 0.1, 0.0]], atol=1e-7)
    np.testing.assert_allclose(wc("l2"), 0.1 * g / np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(wc("l1"), [[0.0, -0.1, 0.0, 0.0]], atol=1e-7)


def test_l1_worst_case_shares_sigma_among_ties():
    g = np.array([[2.0, -2.0, 1.0]], "float32")
    r = ops.convert_to_numpy(norms.worst_case_perturbation(g, "l1", 0.4))
    np.testing.assert_allclose(r, [[0.2, -0.2, 0.0]], atol=1e-7)


@pytest.mark.parametrize("norm", list(P_VALUES))
def test_several_inputs_are_one_joint_vector(norm):
    a, b = _gradients(3, shapes=((4, 3), (4, 2, 2)))
    joint = np.concatenate([a, b.reshape(4, -1)], axis=1)
    q = norms.dual_exponent(norm)
    np.testing.assert_allclose(
        ops.convert_to_numpy(norms.per_example_norm([a, b], q)),
        ops.convert_to_numpy(norms.per_example_norm(joint, q)),
        rtol=1e-5,
    )
    ra, rb = norms.worst_case_perturbation([a, b], norm, 0.2)
    together = ops.convert_to_numpy(norms.worst_case_perturbation(joint, norm, 0.2))
    np.testing.assert_allclose(
        np.concatenate(
            [ops.convert_to_numpy(ra), ops.convert_to_numpy(rb).reshape(4, -1)], axis=1
        ),
        together,
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("norm", list(P_VALUES))
def test_zero_gradient_gives_zero_perturbation_and_norm(norm):
    g = np.zeros((2, 5), "float32")
    assert np.all(
        ops.convert_to_numpy(norms.worst_case_perturbation(g, norm, 0.5)) == 0.0
    )
    assert np.all(
        ops.convert_to_numpy(norms.per_example_norm(g, norms.dual_exponent(norm)))
        == 0.0
    )


def test_tiny_and_large_gradients_do_not_under_or_overflow():
    g = np.array([[1e-30, -2e-30, 3e-30], [1e25, 2e25, -3e25]], "float32")
    q = norms.dual_exponent(1.01)  # q = 101: |g|^q would underflow/overflow unscaled
    scale = np.abs(g.astype("float64")).max(axis=1, keepdims=True)
    expected = scale[:, 0] * np.linalg.norm(g / scale, ord=q, axis=1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(norms.per_example_norm(g, q)), expected, rtol=1e-4
    )
    r = ops.convert_to_numpy(norms.worst_case_perturbation(g, 1.01, 1.0))
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(np.linalg.norm(r, ord=1.01, axis=1), 1.0, rtol=1e-4)
