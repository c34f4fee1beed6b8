"""The l1-box projection against a float64 bisection in NumPy, and the sparse
direction against a NumPy reference."""

import numpy as np
import pytest
from keras import ops

from keras_gradreg.src.family.l1_geometry import project_l1_box, sparse_direction


def _projection_by_bisection(x, delta, eps, low, high):
    """argmin ||r - delta||_2 over ||r||_1 <= eps, low <= x + r <= high: the
    KKT point sign(d) min(max(|d| - lam, 0), room), lam by bisection."""
    x, delta = x.astype("float64"), delta.astype("float64")
    room = np.where(delta > 0, high - x, x - low)
    out = np.empty_like(delta)
    for i in range(len(delta)):

        def point(lam, i=i):
            return np.sign(delta[i]) * np.minimum(
                np.maximum(np.abs(delta[i]) - lam, 0), room[i]
            )

        lo, hi = 0.0, np.abs(delta[i]).max()
        if np.abs(point(0.0)).sum() > eps:
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if np.abs(point(mid)).sum() > eps else (lo, mid)
        else:
            hi = 0.0
        out[i] = point(hi)
    return out


@pytest.mark.parametrize("eps", [0.0, 0.5, 3.0, 40.0])
def test_projection_matches_a_float64_bisection(eps):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 50)).astype("float32")
    x[:, :5] = 0.0  # coordinates on the box's bounds
    x[:, 5:10] = 1.0
    delta = (rng.normal(size=(16, 50)) * rng.uniform(0.05, 2.0, (16, 1))).astype(
        "float32"
    )
    got = ops.convert_to_numpy(project_l1_box(x, delta, eps, (0.0, 1.0)))
    expected = _projection_by_bisection(x, delta, eps, 0.0, 1.0)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.abs(got).sum(1).max() <= eps + 1e-4
    assert (x + got).min() >= -1e-6 and (x + got).max() <= 1 + 1e-6


def test_projection_is_the_nearest_feasible_point():
    """No random feasible point is closer to `delta` (an LP-free check that
    the KKT solution is the minimizer)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(1, 8)).astype("float32")
    delta = rng.normal(size=(1, 8)).astype("float32")
    eps = 1.0
    r = ops.convert_to_numpy(project_l1_box(x, delta, eps, (0.0, 1.0)))[0]
    candidates = rng.normal(size=(20000, 8)) * rng.uniform(0, 1, (20000, 1))
    candidates = np.clip(x + candidates, 0, 1) - x
    scale = np.maximum(np.abs(candidates).sum(1, keepdims=True) / eps, 1.0)
    candidates = candidates / scale  # inside the ball and still in the box
    best = np.linalg.norm(candidates - delta[0], axis=1).min()
    assert np.linalg.norm(r - delta[0]) <= best + 1e-6


def test_sparse_direction_matches_numpy():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(6, 40)).astype("float32")
    g[0, :10] = 0.0
    fraction = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 1.5], "float32")
    got = ops.convert_to_numpy(sparse_direction(g, fraction))
    for row, k, out in zip(g, fraction, got):
        index = int(np.clip((1 - k) * 40, 0, 39))
        chosen = np.abs(row) >= np.sort(np.abs(row))[index]
        expected = np.sign(row) * chosen
        np.testing.assert_allclose(out, expected / (np.abs(expected).sum() + 1e-10))
        np.testing.assert_allclose(np.abs(out).sum(), 1.0, rtol=1e-6)
    assert (np.abs(got[1]) > 0).sum() == 2  # the top 5% of 40 coordinates
