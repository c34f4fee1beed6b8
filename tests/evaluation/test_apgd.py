"""Auto-PGD: its schedule, closed-form optima, the constraints, and its
strength against PGD (the independent cross-check is tests/evaluation/test_autoattack_crosscheck.py)."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.evaluation.attacks import APGD, apgd, apgd_targeted, dlr_loss
from keras_gradreg.src.evaluation.attacks.apgd import checkpoints
from tests.helpers import dense_model


def test_checkpoints_follow_the_papers_schedule():
    at, windows = checkpoints(100)
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
    assert at[:5] == [21, 40, 56, 69, 79]
    assert windows[:5] == [22, 19, 16, 13, 10] and min(windows) == 6
    assert at[-1] < 100 and checkpoints(1) == ([0], [1])


def test_dlr_loss_matches_its_formula():
    z = np.array([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 4.0]], "float32")
    y = np.array([0, 1], "int32")
    got = keras.ops.convert_to_numpy(dlr_loss(keras.ops.convert_to_tensor(z), y))
    expected = [-(3.0 - 1.0) / (3.0 - 0.5), -(2.0 - 4.0) / (4.0 - 1.0)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    targets = np.array([3, 0], "int32")
    got = keras.ops.convert_to_numpy(
        dlr_loss(keras.ops.convert_to_tensor(z), y, targets)
    )
    expected = [
        -(3.0 + 1.0) / (3.0 - 0.5 * (0.5 - 1.0)),
        -(2.0 - 0.0) / (4.0 - 0.5 * (1.0 + 0.0)),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reaches_the_closed_form_optimum_of_a_binary_linear_model(norm):
    """Two classes, logits difference d(x) = v . x + c: the minimum of
    d over the ball is d(x) - eps ||v||_q, so a point is broken iff
    d(x) < eps ||v||_q (no input range)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=6)
    w = np.stack([v / 2, -v / 2], axis=1)
    model = dense_model(w, np.zeros(2))
    x = rng.normal(size=(200, 6)).astype("float32")
    y = np.zeros(200, "int32")
    d = x @ v
    keep = d > 0
    x, y, d = x[keep], y[keep], d[keep]
    eps = 0.3
    q_norm = np.abs(v).sum() if norm == "linf" else np.linalg.norm(v)
    breakable = d < eps * q_norm * 0.999
    x_adv = apgd(model, x, y, norm, eps, steps=30, input_range=None)
    broken = kg.attacks.predicted_classes(model.predict(x_adv, verbose=0)) != y
    np.testing.assert_array_equal(broken, breakable)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_iterates_stay_in_the_ball_and_range_and_repeat_by_seed(norm, targeted):
    rng = np.random.default_rng(1)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
    x = rng.random((40, 8)).astype("float32")
    y = rng.integers(0, 4, 40).astype("int32")
    eps = 0.2 if norm == "linf" else 0.5
    run = apgd_targeted if targeted else apgd
    first = run(model, x, y, norm, eps, steps=12, seed=3)
    delta = (first - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-5) + 1e-6
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, run(model, x, y, norm, eps, steps=12, seed=3))


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_model():
    """On a small trained model APGD-CE alone is about as strong as PGD-20
    (within 6 of the 300 points: each breaks points the other misses), and
    the suite's cascade of APGD-CE and APGD-T is at least as strong. (The
    trained model differs between a full run of the suite and this file
    alone: a per-attack margin of one point failed in a full run.)"""
    rng = np.random.default_rng(2)
    x = rng.random((300, 10)).astype("float32")
    y = (x[:, :5].sum(1) > x[:, 5:].sum(1)).astype("int32") + 2 * (x[:, 0] > 0.5)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=50, verbose=0)
    eps = 0.08
    correct = kg.attacks.correct_predictions(model, x, y)

    def held(x_adv):
        return kg.attacks.correct_predictions(model, x_adv, y)

    pgd_acc = np.mean(correct & held(kg.pgd(model, x, y, "linf", eps, steps=20)))
    ce = correct & held(apgd(model, x, y, "linf", eps, steps=50))
    targeted = correct & held(apgd_targeted(model, x, y, "linf", eps, steps=50))
    assert np.mean(ce) <= pgd_acc + 0.02
    assert np.mean(targeted) <= pgd_acc + 0.02
    assert np.mean(ce & targeted) <= pgd_acc
    assert np.mean(ce) < np.mean(correct)  # it does break points


def test_apgd_objects_and_bad_arguments():
    assert kg.attacks.get("apgd-t") == APGD(targeted=True)
    assert APGD(loss="dlr").name == "APGD-DLR"
    model = dense_model(np.eye(3), np.zeros(3))
    x, y = np.full((4, 3), 0.5, "float32"), np.zeros(4, "int32")
    with pytest.raises(ValueError, match="norm"):
        apgd(model, x, y, 3.0, 0.1)  # linf, l2 and l1 only
    with pytest.raises(ValueError, match="loss"):
        apgd(model, x, y, "linf", 0.1, loss="margin")
    with pytest.raises(ValueError, match="target_classes"):
        apgd_targeted(model, x, y, "linf", 0.1, target_classes=3)


def _four_class_data(rng, shape):
    x = rng.random((80, *shape)).astype("float32")
    flat = x.reshape(len(x), -1)
    y = (flat[:, 0] > flat[:, 1]).astype("int32") + 2 * (flat[:, 2] > 0.5)
    return x, y


def _fitted_logits_model(x, y, classes):
    """A small ReLU network on images `x`, fitted to `y`, giving logits."""
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(classes)(h))
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=40, verbose=0)
    return model


def test_evaluate_robustness_runs_apgd_in_the_worst_case():
    rng = np.random.default_rng(4)
    x, y = _four_class_data(rng, (6,))
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(inputs))
    model.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, verbose=0)
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.05], ["fgm", "apgd-ce", "apgd-t"], checks=False,
        verbose=0,
    )  # fmt: skip
    names = {row["attack"] for row in report.rows}
    assert {"FGM", "APGD-CE", "APGD-T", "worst case"} <= names
    worst = report.accuracy("linf", 0.05)
    for name in ("FGM", "APGD-CE", "APGD-T"):
        assert worst <= report.accuracy("linf", 0.05, name)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_stays_in_the_ball_breaks_points_and_repeats(norm):
    rng = np.random.default_rng(5)
    x = rng.random((60, 6, 6)).astype("float32")
    y = (x[:, :3].mean((1, 2)) > x[:, 3:].mean((1, 2))).astype("int32")
    model = _fitted_logits_model(x, y, classes=2)
    eps = 0.1 if norm == "linf" else 0.6
    x_adv = kg.attacks.square(model, x, y, norm, eps, queries=200, seed=1)
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-5) + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    correct = kg.attacks.correct_predictions(model, x, y)
    robust = correct & kg.attacks.correct_predictions(model, x_adv, y)
    assert robust.mean() < correct.mean()
    again = kg.attacks.square(model, x, y, norm, eps, queries=200, seed=1)
    np.testing.assert_array_equal(x_adv, again)
    with pytest.raises(ValueError, match="image"):
        kg.attacks.square(model, x.reshape(60, 36)[:, None, :].reshape(60, 36), y)


def test_the_standard_suite_cascades_apgd_ce_apgd_t_fab_t_and_square():
    rng = np.random.default_rng(6)
    x, y = _four_class_data(rng, (5, 5))
    inputs = keras.Input((5, 5))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=40, verbose=0)
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.05], "standard", checks=False, verbose=0
    )
    order = [row["attack"] for row in report.rows]
    assert order == ["APGD-CE", "APGD-T", "FAB-T", "Square", "worst case"]
    cumulative = [row["accuracy"] for row in report.rows]
    assert cumulative == sorted(cumulative, reverse=True)[:4] + [cumulative[3]]
    assert report.accuracy("linf", 0.05) == cumulative[3] <= report.clean_accuracy
    # The cascade's result is the per-point worst case of the same attacks.
    single = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.05], ["apgd-ce"], checks=False, verbose=0
    )
    assert report.accuracy("linf", 0.05) <= single.accuracy("linf", 0.05)


def test_dlr_needs_enough_classes_and_the_suite_skips_apgd_t_below_four():
    rng = np.random.default_rng(7)
    x = rng.random((30, 4, 4)).astype("float32")
    y = (x[:, 0, 0] > 0.5).astype("int32")
    inputs = keras.Input((4, 4))
    h = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd(model, x, y, "linf", 0.1, loss="dlr", steps=2)
    with pytest.raises(ValueError, match="target_classes"):
        apgd_targeted(model, x, y, "linf", 0.1, steps=2, target_classes=2)
    with pytest.warns(UserWarning, match="skips APGD-T"):
        report = kg.evaluate_robustness(
            model, x, y, ["linf"], [0.1], "standard", checks=False, verbose=0
        )
    assert [row["attack"] for row in report.rows] == [
        "APGD-CE", "FAB-T", "Square", "worst case"
    ]  # fmt: skip


def test_square_views_flat_examples_as_images():
    rng = np.random.default_rng(8)
    x = rng.random((40, 6, 6)).astype("float32")
    y = (x[:, :3].mean((1, 2)) > x[:, 3:].mean((1, 2))).astype("int32")
    inputs = keras.Input((36,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    flat_model = keras.Model(inputs, keras.layers.Dense(2)(h))
    image_model = keras.Sequential(
        [keras.Input((6, 6)), keras.layers.Reshape((36,)), flat_model]
    )
    flat = kg.attacks.square(
        flat_model, x.reshape(40, 36), y, "linf", 0.1, queries=50, image_shape=(6, 6)
    )
    images = kg.attacks.square(image_model, x, y, "linf", 0.1, queries=50)
    # The same random search on the same windows: identical points.
    np.testing.assert_array_equal(flat, images.reshape(40, 36))
    with pytest.raises(ValueError, match="image_shape"):
        kg.attacks.square(flat_model, x.reshape(40, 36), y, image_shape=(5, 5))
    with pytest.raises(ValueError, match="image_shape=\\(28, 28\\)"):
        kg.attacks.square(flat_model, x.reshape(40, 36), y)
    # evaluate_robustness gives its image_shape to every Square without one
    # ("square" is `Square()`, the same path).
    report = kg.evaluate_robustness(
        flat_model, x.reshape(40, 36), y, ["linf"], [0.1],
        [kg.attacks.Square(queries=50)], checks=False, verbose=0,
        image_shape=(6, 6),
    )  # fmt: skip
    expected = kg.attacks.correct_predictions(image_model, x, y)
    expected &= kg.attacks.correct_predictions(image_model, images, y)
    assert report.accuracy("linf", 0.1) == pytest.approx(expected.mean())
    assert expected.mean() < kg.attacks.classification_accuracy(image_model, x, y)
    with pytest.raises(ValueError, match="image_shape"):  # without it: flat rows
        kg.evaluate_robustness(
            flat_model, x.reshape(40, 36), y, ["linf"], [0.1], ["square"],
            checks=False, verbose=0,
        )  # fmt: skip


def test_small_batches_run_at_a_few_padded_sizes():
    from keras_gradreg.src.evaluation.attacks._runner import _pad, _padded_size

    sizes = sorted({_padded_size(n, 500) for n in range(1, 501)})
    assert sizes == [39, 51, 68, 90, 120, 159, 212, 282, 375, 500]
    waste = [_padded_size(n, 500) / n for n in range(39, 501)]
    assert 1 <= min(waste) and max(waste) <= 4 / 3
    rows = np.arange(10)
    if keras.backend.backend() == "torch":  # eager: no shapes to share
        np.testing.assert_array_equal(_pad(rows, 500), rows)
    else:
        np.testing.assert_array_equal(_pad(rows, 500), np.arange(39) % 10)


def test_targeted_apgd_attacks_only_the_points_still_robust():
    rng = np.random.default_rng(9)
    x, y = _four_class_data(rng, (5, 5))
    model = _fitted_logits_model(x, y, classes=4)
    x_adv = apgd_targeted(model, x, y, "linf", 0.08, steps=20)
    wrong = ~kg.attacks.correct_predictions(model, x, y)
    # Misclassified clean points are returned untouched, the rest stay in
    # the ball, and every rank together breaks at least what rank 1 does.
    np.testing.assert_array_equal(x_adv[wrong], x[wrong])
    assert np.abs(x_adv - x).max() <= 0.08 + 1e-6
    first = apgd_targeted(model, x, y, "linf", 0.08, steps=20, target_classes=1)
    broken = ~kg.attacks.correct_predictions(model, x_adv, y)
    assert broken.sum() >= (~kg.attacks.correct_predictions(model, first, y)).sum()
    assert (broken & ~wrong).any()
