"""l1-APGD: the constraints, the exact optimum of linear models, its schedule
and its place in the standard suite; expectation over transformation (EOT)
against the mean of individual gradients, and the "rand" suite."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradreg as kg
from keras_gradreg.src.evaluation.attacks import eot
from keras_gradreg.src.evaluation.attacks.apgd_l1 import l1_stages
from tests.helpers import dense_model


class AlwaysDropout(keras.layers.Dropout):
    """Dropout that stays on at inference (Monte-Carlo dropout)."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def _binary_linear(seed, n=200, d=12):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    model = dense_model(np.stack([v / 2, -v / 2], axis=1), np.zeros(2))
    x = rng.uniform(size=(n, d)).astype("float32")
    margin = x @ v - np.median(x @ v)  # half the points in each class
    keep = margin > 0
    model.layers[-1].bias.assign(np.array([-0.5, 0.5]) * np.median(x @ v))
    return model, v, x[keep], margin[keep]


def test_stages_follow_autoattack():
    assert l1_stages(12.0, 100, True) == [(36.0, 30), (24.0, 30), (12.0, 40)]
    assert l1_stages(1.0, 10, True) == [(3.0, 3), (2.0, 3), (1.0, 4)]
    assert l1_stages(1.0, 10, False) == [(1.0, 10)]


@pytest.mark.parametrize("schedule", [True, False])
def test_breaks_exactly_the_breakable_points_of_a_linear_model(schedule):
    """Two classes, logit difference m(x) = v . x + c in the box [0, 1]: its
    minimum over the l1 ball inside the box moves the coordinates with the
    largest |v_i| to their bounds in turn (a fractional knapsack), so a
    point is breakable iff that minimum is negative."""
    model, v, x, margin = _binary_linear(0)
    eps = 1.0
    y = np.zeros(len(x), "int32")
    minimum = []
    for point, m in zip(x, margin):
        room = np.where(v > 0, point, 1 - point)  # how far each coordinate helps
        budget, value = eps, m
        for i in np.argsort(-np.abs(v)):
            move = min(room[i], budget)
            value, budget = value - abs(v[i]) * move, budget - move
        minimum.append(value)
    minimum = np.array(minimum)
    clear = np.abs(minimum) > 1e-3 * np.abs(v).max()
    x_adv = kg.attacks.apgd(model, x, y, "l1", eps, steps=50, l1_eps_schedule=schedule)
    broken = kg.attacks.predicted_classes(model.predict(x_adv, verbose=0)) != y
    np.testing.assert_array_equal(broken[clear], (minimum < 0)[clear])
    assert 0 < broken.sum() < len(x)
    assert np.abs(x_adv - x).sum(1).max() <= eps * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def _mlp(features, classes, seed, points):
    """A random ReLU MLP, uniform inputs and the labels it predicts."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(classes)]
    )  # fmt: skip
    x = np.random.default_rng(seed).uniform(size=(points, features)).astype("float32")
    y = kg.attacks.predicted_classes(model.predict(x, verbose=0)).astype("int32")
    return model, x, y


def test_targeted_l1_stays_in_the_ball_and_the_box():
    model, x, y = _mlp(20, 5, 0, 24)
    x_adv = kg.attacks.apgd_targeted(model, x, y, "l1", 0.5, steps=10, target_classes=3)
    assert np.abs(x_adv - x).sum(1).max() <= 0.5 * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert kg.attacks.classification_accuracy(model, x_adv, y) < 1.0


def test_arguments_are_validated():
    model = dense_model(np.eye(3), np.zeros(3))
    x, y = np.full((2, 3), 0.5, "float32"), np.zeros(2, "int32")
    with pytest.raises(ValueError, match="eot_samples=0"):
        kg.attacks.apgd(model, x, y, "l1", 1.0, eot_samples=0)
    with pytest.raises(ValueError, match="l1_eps_schedule='yes'"):
        kg.attacks.apgd(model, x, y, "l1", 1.0, l1_eps_schedule="yes")
    with pytest.raises(ValueError, match="eot_samples=1.5"):
        kg.attacks.APGD(eot_samples=1.5)


def _dropout_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
         AlwaysDropout(0.5, seed=1), keras.layers.Dense(3)]
    )  # fmt: skip
    return model


def _majority_labels(model, x):
    """Per point, the class most draws predict."""
    votes = [
        eot.accuracy_over_draws(model, x, np.full(len(x), c), 20) for c in range(3)
    ]
    return np.argmax(votes, axis=0).astype("int32")


def test_eot_gradient_is_the_mean_of_the_draws_gradients():
    """Each draw's gradient in NumPy from that draw's dropout mask."""
    model = _dropout_model()
    dense1, dropout, dense2 = model.layers
    w1, b1 = (ops.convert_to_numpy(v) for v in (dense1.kernel, dense1.bias))
    w2 = ops.convert_to_numpy(dense2.kernel)
    x = np.random.default_rng(3).uniform(size=(4, 6)).astype("float32")
    y = np.array([0, 1, 2, 0], "int32")

    def fn(inputs):
        z = model(inputs, training=False)
        return ops.logsumexp(z, axis=-1) - ops.take_along_axis(
            z, ops.expand_dims(ops.convert_to_tensor(y), -1), axis=-1
        )[:, 0], z

    states = eot.seed_states(model)
    assert states  # the dropout's seed generator
    gradients, masks = [], []
    for draw in range(5):
        with eot.draw_scope(model, states, 7, 10 + draw):
            mask = ops.convert_to_numpy(dropout(np.ones((4, 8), "float32"))) > 0
        masks.append(mask)
        h = x @ w1 + b1
        z = ops.convert_to_numpy(model.layers[2](mask * np.maximum(h, 0) / 0.5))
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = p - np.eye(3)[y]
        gradients.append(((dz @ w2.T) * mask / 0.5 * (h > 0)) @ w1.T)
    assert len({m.tobytes() for m in masks}) == 5  # the draws differ
    _, _, got = eot.expected_values_and_gradient(
        model, fn, ops.convert_to_tensor(x), 5, 7, 10
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), np.mean(gradients, axis=0), rtol=1e-4, atol=1e-6
    )


def test_accuracy_over_draws_is_a_mean_for_random_models_only():
    model = _dropout_model()
    x = np.random.default_rng(4).uniform(size=(32, 6)).astype("float32")
    y = np.zeros(32, "int32")
    scores = eot.accuracy_over_draws(model, x, y, 20)
    assert ((scores > 0) & (scores < 1)).any()  # some points flip between draws
    np.testing.assert_array_equal(scores, eot.accuracy_over_draws(model, x, y, 20))
    fixed = dense_model(np.eye(6, 3), np.zeros(3))
    fixed_scores = eot.accuracy_over_draws(fixed, x, y, 20)
    np.testing.assert_array_equal(
        fixed_scores, kg.attacks.correct_predictions(fixed, x, y) * 1.0
    )


def test_eot_attack_on_a_random_model_lowers_accuracy_within_the_ball():
    model = _dropout_model()
    x = np.random.default_rng(5).uniform(size=(32, 6)).astype("float32")
    y = _majority_labels(model, x)
    x_adv = kg.attacks.apgd(model, x, y, "linf", 0.5, steps=10, eot_samples=4)
    assert np.abs(x_adv - x).max() <= 0.5 + 1e-6
    clean = eot.accuracy_over_draws(model, x, y, 20).mean()
    assert eot.accuracy_over_draws(model, x_adv, y, 20).mean() < clean - 0.1


@pytest.mark.slow  # the full suites: 100 steps, 20 draws
def test_rand_suite_on_a_deterministic_model_equals_apgd_without_eot():
    model, x, y = _mlp(10, 4, 2, 40)
    y[:5] = (y[:5] + 1) % 4
    common = dict(norms=["linf"], eps_values=[0.05], checks=False, verbose=0)
    with pytest.warns(UserWarning, match="deterministic to Keras"):
        rand = kg.evaluate_robustness(model, x, y, attacks="rand", **common)
    plain = kg.evaluate_robustness(
        model, x, y, attacks=[kg.attacks.APGD(), kg.attacks.APGD(loss="dlr")],
        cascade=True, **common,
    )  # fmt: skip
    assert [r["attack"] for r in rand.rows[:2]] == ["APGD-CE-EOT20", "APGD-DLR-EOT20"]
    assert [r["accuracy"] for r in rand.rows] == [r["accuracy"] for r in plain.rows]
    assert rand.clean_accuracy == plain.clean_accuracy
    assert rand.accuracy("linf", 0.05) < rand.clean_accuracy
    assert "rand suite" in rand.suite and "rand suite" in rand.to_markdown()


@pytest.mark.slow  # the full suites: 100 steps, 20 draws
def test_rand_suite_scores_the_mean_over_draws():
    model = _dropout_model()
    x = np.random.default_rng(7).uniform(size=(24, 6)).astype("float32")
    y = _majority_labels(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = kg.evaluate_robustness(
            model, x, y, ["linf"], [0.1], "rand", checks=False, verbose=0
        )
    assert not [w for w in caught if "deterministic" in str(w.message)]
    clean = eot.accuracy_over_draws(model, x, y, 20)
    assert report.clean_accuracy == pytest.approx(clean.mean())
    assert report.accuracy("linf", 0.1) < report.clean_accuracy


@pytest.mark.slow  # the full suites: 100 steps, 20 draws
def test_standard_suite_in_l1_runs_autoattacks_l1_attacks():
    model, x, y = _mlp(10, 6, 3, 30)
    report = kg.evaluate_robustness(
        model, x, y, ["l1", "linf"], {"l1": [0.5], "linf": [0.5]}, "standard-no-fab",
        checks=False, verbose=0, image_shape=(2, 5),
    )  # fmt: skip
    l1_rows = [r["attack"] for r in report.rows if r["norm"] == "l1"]
    linf_rows = [r["attack"] for r in report.rows if r["norm"] == "linf"]
    assert l1_rows[:2] == ["APGD-CE", "APGD-T"] and "Square" not in l1_rows
    assert "Square" in linf_rows
    assert report.accuracy("l1", 0.5) < report.clean_accuracy
    assert "APGD-T (5 targets) for l1" in report.suite
    l1_line = next(r for r in report.to_markdown().splitlines() if r.startswith("| l1"))
    assert l1_line.endswith(" | - | " + f"{report.accuracy('l1', 0.5):.2%} |")
