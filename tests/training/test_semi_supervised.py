"""Semi-supervised batches: labeled rows weigh 1, unlabeled rows 0, and the
label-free member trains through `model.fit` on them."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.training.semi_supervised import (
    SemiSupervisedBatches,
    balanced_labels,
)


def _data(n=60, classes=3):
    rng = np.random.default_rng(0)
    x = rng.random((n, 5)).astype("float32")
    y = (np.arange(n) % classes).astype("int32")
    return x, y


def test_balanced_labels_draws_per_class_without_repeats():
    _, y = _data()
    chosen = balanced_labels(y, per_class=4, seed=1)
    assert len(set(chosen.tolist())) == 12
    assert np.bincount(y[chosen]).tolist() == [4, 4, 4]
    assert np.array_equal(chosen, balanced_labels(y, per_class=4, seed=1))
    assert not np.array_equal(chosen, balanced_labels(y, per_class=4, seed=2))


@pytest.mark.parametrize("per_class", [0, 2.5, 21])
def test_balanced_labels_refuses_bad_counts(per_class):
    _, y = _data()
    with pytest.raises(ValueError, match="per_class"):
        balanced_labels(y, per_class=per_class)


def test_batches_mix_weighted_labeled_and_unweighted_unlabeled_rows():
    x, y = _data()
    labeled = balanced_labels(y, per_class=2)
    batches = SemiSupervisedBatches(
        x[labeled], y[labeled], x, labeled_batch_size=4, unlabeled_batch_size=8
    )
    assert len(batches) == 8  # ceil(60 / 8)
    seen_labeled, seen_unlabeled = [], []
    for i in range(len(batches)):
        xb, yb, wb = batches[i]
        assert xb.shape == (12, 5) and yb.shape == (12,) and wb.shape == (12,)
        assert wb.tolist() == [3.0] * 4 + [0.0] * 8  # (4 + 8) / 4: labeled mean
        for row, label in zip(xb[:4], yb[:4]):  # labeled rows keep their label
            (where,) = np.flatnonzero((x[labeled] == row).all(axis=1))
            assert y[labeled][where] == label
            seen_labeled.append(where)
        seen_unlabeled += [np.flatnonzero((x == r).all(axis=1))[0] for r in xb[4:]]
    # Every label equally often; the unlabeled pool covered in one epoch.
    counts = np.bincount(seen_labeled, minlength=6)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 32
    assert set(seen_unlabeled) == set(range(60))
    # A batch depends only on (seed, epoch, index); the next epoch differs.
    assert np.array_equal(batches[3][0], batches[3][0])
    first = batches[0][0]
    batches.on_epoch_end()
    assert not np.array_equal(first, batches[0][0])
    with pytest.raises(IndexError):
        batches[len(batches)]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"labeled_batch_size": 0}, "labeled_batch_size"),
        ({"labeled_batch_size": 7}, "labeled_batch_size"),
        ({"unlabeled_batch_size": 61}, "unlabeled_batch_size"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"labeled_weight": 0.0}, "labeled_weight"),
    ],
)
def test_batches_refuse_bad_sizes_by_name(kwargs, name):
    x, y = _data()
    arguments = {"labeled_batch_size": 2, "unlabeled_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=name):
        SemiSupervisedBatches(x[:6], y[:6], x, **arguments)


def test_batches_refuse_mismatched_arrays():
    x, y = _data()
    with pytest.raises(ValueError, match="y_labeled"):
        SemiSupervisedBatches(x[:6], y[:5], x)
    with pytest.raises(ValueError, match="x_unlabeled"):
        SemiSupervisedBatches(x[:6], y[:6], x[:, :4])


def test_label_free_member_uses_the_unlabeled_rows():
    """Supervised-only training ignores the unlabeled rows (their weight is
    0), so changing them changes nothing; the label-free member's
    divergence sees them, so its weights move."""
    x, y = _data()
    labeled = np.arange(6)

    def trained(x_unlabeled, **regularizer):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5,))
        outputs = keras.layers.Dense(3, activation="softmax")(inputs)
        model = kg.GradRegModel(inputs, outputs, **regularizer)
        model.compile("sgd", "sparse_categorical_crossentropy")
        batches = SemiSupervisedBatches(
            x[labeled], y[labeled], x_unlabeled, 2, 6, steps_per_epoch=3
        )
        model.fit(batches, epochs=1, verbose=0)
        return model.get_weights()[0]

    other = x[::-1] * 0.5
    plain = [trained(u, sigma=0.0) for u in (x, other)]
    np.testing.assert_allclose(plain[0], plain[1], atol=1e-6)
    vat = {"virtual": True, "norm": "l2", "sigma": 0.5, "form": "perturb"}
    moved = [trained(u, **vat) for u in (x, other)]
    assert np.abs(moved[0] - moved[1]).max() > 1e-4


def test_default_weights_make_the_supervised_loss_the_labeled_mean():
    x, y = _data()
    batches = SemiSupervisedBatches(
        x[:6], y[:6], x, labeled_batch_size=4, unlabeled_batch_size=8
    )
    xb, yb, wb = batches[0]
    probabilities = np.random.default_rng(1).dirichlet(np.ones(3), len(xb))
    loss = keras.losses.SparseCategoricalCrossentropy()
    weighted = loss(yb, probabilities.astype("float32"), sample_weight=wb)
    labeled_mean = -np.mean(np.log(probabilities[np.arange(4), yb[:4]]))
    np.testing.assert_allclose(float(weighted), labeled_mean, rtol=1e-5)


def test_separate_batches_weigh_labeled_rows_one():
    x, y = _data()
    batches = SemiSupervisedBatches(x[:6], y[:6], x, 4, 8, passes="separate")
    _, _, weights = batches[0]
    assert weights.tolist() == [1.0] * 4 + [0.0] * 8
    with pytest.raises(ValueError, match="Received: passes='both'"):
        SemiSupervisedBatches(x[:6], y[:6], x, 4, 8, passes="both")


def test_separate_passes_normalize_each_group_by_its_own_statistics():
    """With `labeled_rows`, the labeled rows pass alone: the clean loss the
    step logs is the loss of the labeled rows normalized by their own batch
    statistics, not by the whole batch's (which the mixed layout uses)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 4)).astype("float32")
    x[4:] = 3.0 * x[4:] + 2.0  # unlabeled rows: other statistics
    y = np.array([0, 1, 2, 1] + [0] * 8)
    weights = np.array([1.0] * 4 + [0.0] * 8, "float32")

    def first_step(**regularizer):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        normalized = keras.layers.BatchNormalization(center=False, scale=False)(inputs)
        outputs = keras.layers.Dense(3, activation="softmax")(normalized)
        model = kg.GradRegModel(inputs, outputs, **regularizer)
        model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
        initial = [w.copy() for w in model.get_weights()]
        history = model.fit(
            x, y, sample_weight=weights, batch_size=12, shuffle=False, verbose=0
        )
        return model, initial, history.history

    vat = {"virtual": True, "norm": "l2", "sigma": 0.5, "form": "perturb"}
    model, initial, logs = first_step(labeled_rows=4, **vat)
    loss = keras.losses.SparseCategoricalCrossentropy()
    kernel, bias = initial[-2:]

    def labeled_loss(rows):
        z = (x[:4] - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-3)
        return float(loss(y[:4], keras.ops.softmax(z @ kernel + bias)))

    np.testing.assert_allclose(logs["clean_loss"][0], labeled_loss(x[:4]), rtol=1e-4)
    assert abs(labeled_loss(x) - labeled_loss(x[:4])) > 1e-2  # the test can fail
    assert logs["adv_loss"][0] > 0.0  # the divergence on the unlabeled rows
    mixed = first_step(**vat)[2]
    # Mixed: Keras's mean runs over all 12 rows, the 8 unlabeled weighing 0.
    np.testing.assert_allclose(
        mixed["clean_loss"][0], labeled_loss(x) * 4 / 12, rtol=1e-4
    )
    config = model.regularizer.get_config()
    assert kg.GradientRegularizer.from_config(config).labeled_rows == 4


def test_labeled_rows_are_checked():
    for rows in (0, 1.5, True):
        with pytest.raises(ValueError, match="Received: labeled_rows="):
            kg.GradientRegularizer(labeled_rows=rows)
    inputs = keras.Input((5,))
    model = kg.GradRegModel(inputs, keras.layers.Dense(3)(inputs), labeled_rows=8)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    with pytest.raises(ValueError, match="no unlabeled row.*labeled_rows=8"):
        model.fit(x[:8], y[:8], batch_size=8, verbose=0)
