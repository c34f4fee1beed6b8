"""The weight gradient of every form x norm against finite differences of an
independent NumPy float64 objective (tests/reference.py)."""

import math
import zlib

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests import reference
from tests.conftest import BACKEND

NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0, 3.0: 3.0}
FORMS = ("penalty", "perturb", "finite_difference")
# Measured floors: TF reproduces the float64 reference to ~5e-8 relative
# error. On JAX and torch even a plain `keras.Model` step on this float64
# model is off by ~6e-7 (part of Keras's loss runs in float32 there), which
# second derivatives amplify to ~1e-5. Bugs of the kind these tests catch (a
# 1/B factor, a wrong dual norm, r* not held constant) are O(1) errors.
# On torch the finite-difference form's quotient (sigma/h = 20 here)
# amplifies that rounding to ~2e-7 in absolute terms.
RTOL, ATOL = {
    "tensorflow": (1e-6, 1e-8),
    "jax": (5e-5, 1e-7),
    "torch": (5e-5, 1e-6),
}[BACKEND]


def _tiny_model(seed, **regularizer):
    assert keras.config.dtype_policy().compute_dtype == "float64"
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    outputs = keras.layers.Dense(3)(hidden)
    model = kg.GradRegModel(inputs, outputs, **regularizer)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.8, w.shape) for w in model.get_weights()])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _library_gradient(model, x, y, sample_weight):
    """One SGD step with learning rate 1: the update is minus the gradient."""
    before = [np.array(w) for w in model.get_weights()]
    model.train_on_batch(x, y, sample_weight=sample_weight)
    return [b - np.array(a) for b, a in zip(before, model.get_weights())]


def _data(seed, n=6):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.9, (n, 4))
    y = rng.integers(0, 3, n).astype("int32")
    w = rng.uniform(0.2, 2.0, n)
    return x, y, w


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("norm", list(NORMS))
# alpha > 0 without sample weights: the clean loss's weight gradient comes
# from the backward that gives dL/dx (objective.shares_clean_backward).
@pytest.mark.parametrize("alpha,weighted", [(0.0, False), (0.3, True), (0.3, False)])
def test_weight_gradient_matches_finite_differences(
    float64, form, norm, alpha, weighted
):
    _check_weight_gradient(form, norm, alpha, weighted)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX step's rule for sharing")
@pytest.mark.parametrize("form", ["perturb", "finite_difference"])
@pytest.mark.parametrize("share", [True, False])
def test_jax_weight_gradient_with_and_without_shared_backward(
    float64, monkeypatch, form, share
):
    """JAX shares the clean backward only where it pays (not on CPU under
    XLA's default fusions): both paths, whatever the device picks."""
    from keras_gradreg.src.training.backend import jax as jax_step

    monkeypatch.setattr(jax_step, "_shares_clean_backward_here", lambda: share)
    _check_weight_gradient(form, "l2", 0.3, False)


def _check_weight_gradient(form, norm, alpha, weighted):
    sigma = 0.2
    x, y, w = _data(seed=zlib.crc32(f"{form}-{norm}".encode()) % 1000)
    model = _tiny_model(7, norm=norm, sigma=sigma, form=form, alpha=alpha, fd_step=0.01)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    weights = w if weighted else np.ones_like(w)
    p = NORMS[norm]
    fixed = reference.fixed_perturbation(params, x, y, p=p, sigma=sigma, form=form)
    expected = reference.finite_difference_gradient(
        lambda ps: reference.objective(
            ps, x, y, weights, p=p, sigma=sigma, form=form, alpha=alpha, fixed=fixed
        ),
        params,
    )
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_perturb_form_clips_to_input_range(float64):
    x, y, w = _data(seed=3)
    x[:, 0] = 0.99  # the worst case pushes some coordinates past 1.0
    model = _tiny_model(
        2, norm="linf", sigma=0.3, form="perturb", input_range=(0.0, 1.0)
    )
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    fixed = reference.fixed_perturbation(
        params, x, y, p=math.inf, sigma=0.3, form="perturb"
    )
    ones = np.ones(len(x))
    objective = lambda ps: reference.objective(
        ps,
        x,
        y,
        ones,
        p=math.inf,
        sigma=0.3,
        form="perturb",
        alpha=0.0,
        fixed=fixed,
        clip=(0.0, 1.0),
    )
    unclipped = lambda ps: reference.objective(
        ps, x, y, ones, p=math.inf, sigma=0.3, form="perturb", alpha=0.0, fixed=fixed
    )
    expected = reference.finite_difference_gradient(objective, params)
    wrong = reference.finite_difference_gradient(unclipped, params)
    got = _library_gradient(model, x, y, None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    assert not np.allclose(got[0], wrong[0], rtol=RTOL, atol=ATOL)


def test_finite_difference_with_step_sigma_equals_perturb(float64):
    x, y, _ = _data(seed=5)
    fd = _tiny_model(4, norm="l2", sigma=0.2, form="finite_difference", fd_step=0.2)
    perturb = _tiny_model(4, norm="l2", sigma=0.2, form="perturb")
    np.testing.assert_allclose(
        np.concatenate([g.ravel() for g in _library_gradient(fd, x, y, None)]),
        np.concatenate([g.ravel() for g in _library_gradient(perturb, x, y, None)]),
        rtol=RTOL,
        atol=ATOL,
    )


def test_finite_difference_approaches_penalty_as_step_shrinks(float64):
    x, y, _ = _data(seed=6)
    penalty = np.concatenate(
        [
            g.ravel()
            for g in _library_gradient(_tiny_model(4, norm="l2", sigma=0.2), x, y, None)
        ]
    )
    errors = []
    for h in (1e-1, 1e-2, 1e-3):
        fd = _tiny_model(4, norm="l2", sigma=0.2, form="finite_difference", fd_step=h)
        got = np.concatenate([g.ravel() for g in _library_gradient(fd, x, y, None)])
        errors.append(np.abs(got - penalty).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_input_gradient_is_per_example_for_any_batch_size(float64):
    """The penalty's weight gradient on a batch is the mean of the per-example
    gradients (a batch-mean input gradient would be 1/B too small)."""
    x, y, _ = _data(seed=8, n=5)
    batch = _library_gradient(_tiny_model(3, norm="linf", sigma=0.5), x, y, None)
    singles = [
        _library_gradient(
            _tiny_model(3, norm="linf", sigma=0.5), x[i : i + 1], y[i : i + 1], None
        )
        for i in range(len(x))
    ]
    for k, g in enumerate(batch):
        np.testing.assert_allclose(
            g, np.mean([s[k] for s in singles], axis=0), rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("kind", ["batch_norm", "layer_norm"])
def test_penalty_through_normalization_matches_finite_differences(float64, kind):
    """Double backpropagation through BatchNormalization (training mode) and
    LayerNormalization on every backend against nested central differences
    of an independent float64 objective (TensorFlow's moments drop a
    second-derivative term unless the library replaces them)."""
    sigma = 0.5
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5)(inputs)
    norm_layer = {
        "batch_norm": keras.layers.BatchNormalization,
        "layer_norm": keras.layers.LayerNormalization,
    }[kind]
    h = keras.layers.Activation("tanh")(norm_layer()(h))
    outputs = keras.layers.Dense(3)(h)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=sigma)
    rng = np.random.default_rng(0)
    for v in model.trainable_weights:
        v.assign(rng.normal(0.5 if "gamma" in v.path else 0.0, 0.8, v.shape))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, _ = _data(seed=1)
    params = [np.array(v, dtype="float64") for v in model.trainable_weights]

    def penalty_objective(ps):
        def losses(inputs):
            return reference.normalized_losses(ps, inputs, y, kind)

        g = reference.numeric_input_gradients(losses, x)
        return np.mean(losses(x) + sigma * np.linalg.norm(g, axis=1))

    expected = reference.finite_difference_gradient(penalty_objective, params, 1e-5)
    before = [np.array(v) for v in model.trainable_weights]
    model.train_on_batch(x, y)
    got = [b - np.array(v) for b, v in zip(before, model.trainable_weights)]
    scale = max(np.abs(e).max() for e in expected)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * scale)


def _dropout_model(**regularizer):
    """`_tiny_model` with unseeded dropout on the input and the hidden layer
    (on torch the unseeded layers draw from the global generator)."""
    keras.utils.set_random_seed(11)  # the same dropout seeds in every model
    inputs = keras.Input((4,))
    hidden = keras.layers.Dropout(0.3)(inputs)
    hidden = keras.layers.Dense(5, activation="tanh")(hidden)
    hidden = keras.layers.Dropout(0.5)(hidden)
    outputs = keras.layers.Dense(3)(hidden)
    model = kg.GradRegModel(inputs, outputs, **regularizer)
    rng = np.random.default_rng(4)
    model.set_weights(
        [
            rng.normal(0, 0.8, w.shape)
            if "kernel" in w.path or "bias" in w.path
            else np.array(w)  # the seed states
            for w in model.weights
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _dropout_gradient(model, x, y):
    keras.utils.set_random_seed(12)  # the global generator, for torch
    return np.concatenate([g.ravel() for g in _library_gradient(model, x, y, None)])


def test_finite_difference_approaches_penalty_under_dropout(float64):
    """The finite difference `(L(x + h d) - L(x)) / h` is taken on one
    network: its two passes draw the same dropout masks. With fresh masks
    for the second pass the quotient grew like sigma / h (the form diverged
    in training at its default step)."""
    x, y, _ = _data(seed=8)
    penalty = _dropout_gradient(_dropout_model(norm="l2", sigma=0.2), x, y)
    assert np.abs(penalty).max() > 1e-3  # the masks left a path to the loss
    errors = []
    for h in (1e-1, 1e-2, 1e-3):
        fd = _dropout_model(norm="l2", sigma=0.2, form="finite_difference", fd_step=h)
        errors.append(np.abs(_dropout_gradient(fd, x, y) - penalty).max())
    # First order in h (0.09 -> 0.01 -> 0.001 measured); fresh masks grew
    # like 1/h instead (1.4 -> 12 -> 118).
    assert errors[1] < 0.2 * errors[0] and errors[2] < 0.2 * errors[1]
    assert errors[2] < 5e-3


@pytest.mark.parametrize(
    "regularizer",
    [
        {"form": "perturb", "alpha": 0.5},
        {"form": "multistep", "steps": 3, "random_start": False},
        {"form": "perturb", "virtual": True},
    ],
    ids=["perturb", "multistep", "virtual"],
)
def test_every_pass_of_a_step_draws_the_clean_pass_masks(regularizer):
    """At a vanishing radius the perturbed loss is the clean loss on the
    same masks (the divergence of the label-free member is 0), and the
    layers' generators end the step where one forward pass leaves them."""
    x, y, _ = _data(seed=9)
    x = x.astype("float32")
    model = _dropout_model(norm="l2", sigma=1e-7, **regularizer)
    seeds = [w for w in model.non_trainable_variables if "seed" in w.path]
    assert len(seeds) == 2  # the two dropout layers' generators
    before = [np.array(w) for w in seeds]
    keras.utils.set_random_seed(12)
    model(x, training=True)
    after_one_pass = [np.array(w) for w in seeds]
    for w, value in zip(seeds, before):
        w.assign(value)
    keras.utils.set_random_seed(12)
    logs = model.train_on_batch(x, y, return_dict=True)
    if regularizer.get("virtual"):
        assert abs(logs["adv_loss"]) < 1e-5
    else:
        np.testing.assert_allclose(logs["adv_loss"], logs["clean_loss"], rtol=1e-4)
    for w, expected in zip(seeds, after_one_pass):
        np.testing.assert_array_equal(np.array(w), expected)


def test_share_noise_false_draws_fresh_masks_in_each_pass():
    """The convention of training code that calls the model twice: at a
    vanishing radius the perturbed loss is then another draw of the clean
    one, and the generators advance once per pass."""
    x, y, _ = _data(seed=9)
    losses = {}
    for share in (True, False):
        model = _dropout_model(
            norm="l2", sigma=1e-7, form="perturb", alpha=0.5, share_noise=share
        )
        seeds = [w for w in model.non_trainable_variables if "seed" in w.path]
        keras.utils.set_random_seed(12)
        logs = model.train_on_batch(x.astype("float32"), y, return_dict=True)
        losses[share] = (logs["clean_loss"], logs["adv_loss"])
        if BACKEND != "torch":  # torch's unseeded dropout leaves them alone
            counters = {int(np.array(w)[1]) for w in seeds}
            assert counters == ({1} if share else {2})
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-6)
    assert abs(losses[False][1] - losses[False][0]) > 1e-3
