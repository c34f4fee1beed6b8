"""FAB-T: its exact projection (against a linear program), the minimal
perturbation of a linear classifier (closed form), the constraints, its
strength on a trained model, and its place in the standard suite (the
independent cross-check is tests/evaluation/test_autoattack_crosscheck.py)."""

import keras
import numpy as np
import pytest
from scipy.optimize import linprog, minimize

import keras_gradreg as kg
from keras_gradreg.src.evaluation.attacks import FAB, fab_targeted
from keras_gradreg.src.evaluation.attacks.fab import project_to_hyperplane
from tests.helpers import dense_model


def _corner(t, w, c):
    """The move to the box [0, 1]'s corner furthest along -sign(c) w."""
    toward = -np.sign(c) * np.sign(w)
    return np.where(toward > 0, 1.0 - t, -t) * (w != 0)


def _smallest_move(t, w, c, norm):
    """min ||d|| with w . d = -c and t + d in [0, 1], by a linear program
    (linf: variables d and s, minimize s with |d_i| <= s) or SLSQP (l2);
    None when no point of the box reaches the hyperplane."""
    n = len(t)
    if np.sign(w @ _corner(t, w, c) + c) == np.sign(c):
        return None  # even the furthest corner stays on t's side
    bounds = [(-ti, 1.0 - ti) for ti in t]
    if norm == "linf":
        a_ub = np.zeros((2 * n, n + 1))
        for i in range(n):
            a_ub[2 * i, [i, n]] = [1.0, -1.0]
            a_ub[2 * i + 1, [i, n]] = [-1.0, -1.0]
        result = linprog(
            np.r_[np.zeros(n), 1.0], a_ub, np.zeros(2 * n), np.r_[w, 0.0][None],
            [-c], bounds=bounds + [(0, None)],
        )  # fmt: skip
        assert result.success
        return result.x[:n]
    result = minimize(
        lambda d: 0.5 * d @ d, np.zeros(n), jac=lambda d: d, method="SLSQP",
        bounds=bounds, options={"ftol": 1e-12, "maxiter": 1000},
        constraints=[{"type": "eq", "fun": lambda d: w @ d + c, "jac": lambda d: w}],
    )  # fmt: skip
    assert result.success and abs(w @ result.x + c) < 1e-6
    return result.x


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_projection_is_the_smallest_move_to_the_hyperplane_in_the_box(norm):
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, (60, 6))
    t[:10, 0] = 0.0  # on the box's faces
    w = rng.normal(size=(60, 6))
    w[::3, 2] = 0.0  # coordinates the hyperplane ignores
    c = rng.normal(size=60) * 1.5  # some hyperplanes out of the box's reach
    d = keras.ops.convert_to_numpy(project_to_hyperplane(t, w, c, norm))
    reached = 0
    for i in range(60):
        best = _smallest_move(t[i], w[i], c[i], norm)
        if best is None:
            np.testing.assert_allclose(d[i], _corner(t[i], w[i], c[i]), atol=1e-5)
            continue
        reached += 1
        order = np.inf if norm == "linf" else 2
        assert np.linalg.norm(d[i], order) == pytest.approx(
            np.linalg.norm(best, order), abs=1e-5
        )
        assert w[i] @ d[i] + c[i] == pytest.approx(0.0, abs=1e-5)
        assert np.all(t[i] + d[i] >= -1e-6) and np.all(t[i] + d[i] <= 1 + 1e-6)
    assert 10 < reached < 60  # both cases were tested
    # Without a box: the closed form along the dual direction.
    free = keras.ops.convert_to_numpy(project_to_hyperplane(t, w, c, norm, None))
    if norm == "linf":
        expected = (
            -np.sign(c)[:, None] * np.sign(w) * (np.abs(c) / np.abs(w).sum(1))[:, None]
        )
    else:
        expected = -w * (c / (w * w).sum(1))[:, None]
    np.testing.assert_allclose(free, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("box", [False, True])
def test_finds_the_minimal_perturbation_of_a_linear_classifier(norm, box):
    """For a linear classifier the boundary between the true class y and the
    target t is the hyperplane (w_t - w_y) . x' + b_t - b_y = 0, so the
    smallest perturbation reaching it is its distance in the dual norm
    (without a box) or the linear program's optimum (with the box [0, 1]).
    FAB-T's first step overshoots it by `eta`; its later ones close in."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(12, 4)), rng.normal(size=4) * 0.1
    model = dense_model(w, b)
    # Points near the box's faces, where the box binds, or central ones.
    x = rng.uniform(0.0, 0.15, (24, 12)) if box else rng.uniform(0.3, 0.7, (24, 12))
    x = x.astype("float32")
    z = x @ w + b
    y = z.argmax(1).astype("int32")
    target = np.argsort(-z, axis=1)[:, 1]
    x_adv = fab_targeted(
        model, x, y, norm, 100.0, target_classes=1, steps=50,
        input_range=(0.0, 1.0) if box else None,
    )  # fmt: skip
    order = np.inf if norm == "linf" else 2
    found = np.linalg.norm((x_adv - x).astype("float64"), order, axis=1)
    expected = np.empty(len(x))
    for i in range(len(x)):
        normal = w[:, target[i]] - w[:, y[i]]
        gap = z[i, target[i]] - z[i, y[i]]
        if box:
            expected[i] = np.linalg.norm(_smallest_move(x[i], normal, gap, norm), order)
        else:
            dual = np.abs(normal).sum() if norm == "linf" else np.linalg.norm(normal)
            expected[i] = -gap / dual
    assert np.all(model.predict(x_adv, verbose=0).argmax(1) != y)
    assert np.all(found >= expected * (1 - 1e-4))  # nothing beats the optimum
    # Within the first step's overshoot, and closer after the later steps.
    assert np.all(found <= expected * 1.05 + 1e-6), np.max(found / expected)
    assert np.median(found / expected) < 1.011, np.median(found / expected)


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.3)])
def test_stays_in_the_ball_and_range_and_breaks_points_where_apgd_does(norm, eps):
    rng = np.random.default_rng(2)
    x = rng.random((80, 5, 5)).astype("float32")
    flat = x.reshape(80, -1)
    y = ((flat[:, 0] > flat[:, 1]).astype("int32") + 2 * (flat[:, 2] > 0.5)).astype(
        "int32"
    )
    inputs = keras.Input((5, 5))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(h))
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=40, verbose=0)
    x_adv = fab_targeted(model, x, y, norm, eps, steps=30)
    delta = (x_adv - x).reshape(80, -1).astype("float64")
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    correct = kg.attacks.correct_predictions(model, x, y)
    fooled = correct & ~kg.attacks.correct_predictions(model, x_adv, y)
    moved = size > 0
    # A point moves only when FAB-T breaks it; the others come back clean.
    np.testing.assert_array_equal(moved, fooled)
    apgd_fooled = correct & ~kg.attacks.correct_predictions(
        model, kg.attacks.apgd_targeted(model, x, y, norm, eps, steps=30), y
    )
    assert apgd_fooled.sum() >= 5  # the radius breaks points
    # FAB-T breaks at least as many as APGD-T, give or take two points.
    assert fooled.sum() >= apgd_fooled.sum() - 2, (fooled.sum(), apgd_fooled.sum())
    # Deterministic (no random start with one restart).
    np.testing.assert_array_equal(x_adv, fab_targeted(model, x, y, norm, eps, steps=30))


def test_restarts_and_a_binary_classifier():
    rng = np.random.default_rng(3)
    x = rng.random((40, 6)).astype("float32")
    y = (x[:, 0] > x[:, 1]).astype("int32")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.set_weights([np.array([[4.0], [-4.0], [0], [0], [0], [0]], "float32"),
                       np.zeros(1, "float32")])  # fmt: skip
    x_adv = FAB(steps=20, restarts=2)(model, x, y, "l2", 0.2, seed=1)
    size = np.linalg.norm(x_adv - x, axis=1)
    assert np.all(size <= 0.2 + 1e-6)
    fooled = ~kg.attacks.correct_predictions(model, x_adv, y)
    # Binary linear: broken iff within eps of the boundary, |4 (x0 - x1)| /
    # ||(4, -4)|| <= eps (the box does not bind for these points).
    margin = np.abs(x[:, 0] - x[:, 1]) / np.sqrt(2)
    sure = (margin < 0.2 * 0.95) & (np.minimum(x[:, :2], 1 - x[:, :2]).min(1) > 0.2)
    assert np.all(fooled[sure]) and not np.any(fooled[margin > 0.2])


def test_fab_objects_and_bad_arguments():
    assert kg.attacks.get("fab-t") == FAB() and FAB().name == "FAB-T"
    assert FAB(steps=20).name == "FAB-T-20"
    model = dense_model(np.eye(3), np.zeros(3))
    x, y = np.full((4, 3), 0.5, "float32"), np.zeros(4, "int32")
    for kwargs, message in [
        ({"eta": 0.9}, "eta=0.9"),
        ({"beta": 0.0}, "beta=0.0"),
        ({"alpha_max": 1.5}, "alpha_max=1.5"),
        ({"steps": 0}, "steps=0"),
        ({"target_classes": 3}, "target_classes=3"),
        ({"norm": "l1"}, "norm='l1'"),
    ]:
        with pytest.raises(ValueError, match=message):
            fab_targeted(model, x, y, **{"norm": "linf", "eps": 0.1, **kwargs})
    with pytest.raises(ValueError, match="eta=0.5"):
        FAB(eta=0.5)


def test_a_switch_keeps_the_standard_suite_without_fab_t():
    """`attacks="standard-no-fab"`: APGD-CE, APGD-T and Square (the
    default's FAB-T placement is tested in test_robustness.py)."""
    rng = np.random.default_rng(4)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    x = rng.uniform(0, 1, (40, 8)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    quick = kg.evaluate_robustness(
        model, x, y, ["l2"], [0.3], "standard-no-fab", checks=False, verbose=0,
        image_shape=(2, 4),
    )  # fmt: skip
    assert [row["attack"] for row in quick.rows] == [
        "APGD-CE", "APGD-T", "Square", "worst case"
    ]  # fmt: skip
    assert quick.suite_name == "standard-no-fab"
    assert "without FAB-T" in quick.to_markdown()
