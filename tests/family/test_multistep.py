"""The multistep form: k steps of projected steepest ascent, r_k held
constant in the outer gradient (tests/reference.py is the independent
float64 computation)."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family import multistep
from keras_gradreg.src.family.norms import norm_exponent
from tests import reference
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0, 3.0: 3.0}


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("alpha,weighted", [(0.0, False), (0.4, True)])
def test_weight_gradient_is_that_of_the_loss_at_the_last_iterate(
    float64, norm, alpha, weighted
):
    """Three ascent steps computed independently in NumPy give r_3; the
    library's weight gradient is the finite-difference gradient of
    alpha L(x) + (1 - alpha) L(clip(x + r_3)) with r_3 held constant."""
    sigma, steps, clip = 0.25, 3, (0.0, 1.0)
    x, y, w = _data(seed=21)
    x[:, 1] = 0.97  # some steps reach the top of the input range
    model = _tiny_model(
        5, norm=norm, sigma=sigma, form="multistep", alpha=alpha, steps=steps,
        random_start=False, input_range=clip, l1_sparsity=0.5,
    )  # fmt: skip
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    r = reference.multistep_perturbation(
        params, x, y, p=NORMS[norm], sigma=sigma, steps=steps,
        step_size=2.5 * sigma / steps, clip=clip, coordinates=2,
    )  # fmt: skip
    first = reference.multistep_perturbation(
        params, x, y, p=NORMS[norm], sigma=sigma, steps=1, step_size=sigma,
        clip=clip, coordinates=2,
    )  # fmt: skip
    assert not np.allclose(r, first, atol=1e-3)  # the later steps matter
    weights = w if weighted else np.ones_like(w)
    expected = reference.finite_difference_gradient(
        lambda ps: reference.objective(
            ps,
            x,
            y,
            weights,
            p=NORMS[norm],
            sigma=sigma,
            form="perturb",
            alpha=alpha,
            fixed=r,
            clip=clip,
        ),  # fmt: skip
        params,
    )
    got = _library_gradient(model, x, y, w if weighted else None)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("norm", list(NORMS))
def test_one_step_from_x_is_the_perturb_form(float64, norm):
    x, y, _ = _data(seed=8)
    # The default step 2.5 sigma, projected, is r* itself; l1 with its
    # sparsity on one coordinate of four is the perturb form's l1 step.
    one_step = _tiny_model(
        3, norm=norm, sigma=0.2, form="multistep", steps=1, random_start=False
    )
    perturb = _tiny_model(3, norm=norm, sigma=0.2, form="perturb")
    np.testing.assert_allclose(
        np.concatenate([g.ravel() for g in _library_gradient(one_step, x, y, None)]),
        np.concatenate([g.ravel() for g in _library_gradient(perturb, x, y, None)]),
        rtol=RTOL,
        atol=ATOL,
    )


def _linear_classifier(weights, **regularizer):
    inputs = keras.Input((weights[0].shape[0],))
    outputs = keras.layers.Dense(2)(inputs)
    model = kg.GradRegModel(inputs, outputs, **regularizer)
    model.set_weights(weights)
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.parametrize(
    "norm,random_start,input_range",
    [("linf", False, (0.0, 1.0)), ("linf", True, (0.0, 1.0)), ("l2", False, None)],
)
def test_k_steps_reach_the_closed_form_maximum_of_a_linear_classifier(
    norm, random_start, input_range
):
    """For logits Wx + b with two classes the loss grows with c . r, c the
    other class's weight column minus the true one's: its maximum over the
    ball (and the box) is closed-form, and 5 steps of 2.5 sigma / 5 reach
    it from anywhere in the ball (linf) or from x (l2)."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(6, 2)), rng.normal(size=2)
    x = rng.uniform(0.0, 1.0, (32, 6)).astype("float32")
    x[:, 0] = 0.99  # the box binds on one coordinate
    y = rng.integers(0, 2, 32)
    sigma = 0.1
    model = _linear_classifier(
        [kernel.astype("float32"), bias.astype("float32")], norm=norm, sigma=sigma,
        form="multistep", steps=5, random_start=random_start, input_range=input_range,
    )  # fmt: skip
    adv_loss = model.fit(x, y, batch_size=32, verbose=0).history["adv_loss"][0]
    c = np.where(
        (y == 0)[:, None], kernel[:, 1] - kernel[:, 0], kernel[:, 0] - kernel[:, 1]
    )
    if norm == "linf":
        x_adv = np.clip(x + sigma * np.sign(c), *input_range)
    else:
        x_adv = x + sigma * c / np.linalg.norm(c, axis=1, keepdims=True)
    logits = x_adv @ kernel + bias
    top = logits.max(1)
    losses = (
        top + np.log(np.exp(logits - top[:, None]).sum(1)) - logits[np.arange(32), y]
    )
    assert adv_loss == pytest.approx(losses.mean(), rel=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", 3.0])
def test_iterates_stay_in_the_ball_and_the_range(norm):
    """Random starts and adversarially erratic gradients: every iterate is
    a point of the sigma-ball with x + r in the input range."""
    rng = np.random.default_rng(1)
    leaves = [rng.uniform(0, 1, (16, 3, 4)).astype("float32"),
              rng.uniform(0, 1, (16, 5)).astype("float32")]  # fmt: skip
    sigma, p = 0.3, norm_exponent(norm)
    seen = []

    def input_gradient(deltas):
        seen.append(deltas)
        return [rng.normal(0, 10, t.shape).astype("float32") for t in leaves]

    reg = kg.GradientRegularizer(
        norm=norm, sigma=sigma, form="multistep", steps=4, input_range=(0.0, 1.0),
        step_size=0.5,
    )  # fmt: skip
    seed = keras.random.SeedGenerator(3)
    start = multistep.random_unit_start(leaves, reg.norm, seed)
    flat_start = np.asarray(multistep.flatten(start))
    assert np.all(np.linalg.norm(flat_start, ord=p, axis=1) <= 1.0 + 1e-5)
    assert np.ptp(np.linalg.norm(flat_start, ord=p, axis=1)) > 0.1  # random radii
    clean = input_gradient(None)
    deltas = multistep.maximize(
        input_gradient, clean, leaves, norm=reg.norm, sigma=sigma, steps=reg.steps,
        step_size=reg.step_size, input_range=reg.input_range, start=start,
    )  # fmt: skip
    flat_x = np.asarray(multistep.flatten(leaves))
    for iterate in seen[1:] + [deltas]:  # every point a gradient was taken at, and r_k
        flat = np.asarray(multistep.flatten(iterate))
        assert flat.shape == flat_x.shape
        assert np.all(np.linalg.norm(flat, ord=p, axis=1) <= sigma * (1 + 1e-5))
        assert np.all(flat_x + flat >= -1e-6) and np.all(flat_x + flat <= 1 + 1e-6)
    assert len(seen) == 1 + reg.steps  # a random start needs every step's gradient
    assert [d.shape for d in deltas] == [t.shape for t in leaves]


def test_random_starts_advance_with_each_step_and_follow_the_global_seed(
    classification_data,
):
    """The generator's state moves on every step on every backend (JAX
    threads it through the stateless step), and `set_random_seed` fixes the
    training run."""
    x, y = classification_data
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(4)
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3, activation="softmax")(inputs)
        model = kg.GradRegModel(
            inputs, outputs, norm="linf", sigma=0.2, form="multistep", steps=2
        )
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        before = np.array(model.seed_metric.state)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        after = np.array(model.seed_metric.state)
        assert not np.array_equal(before, after)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "argument,value",
    [("steps", 0), ("steps", 2.5), ("steps", True), ("step_size", 0.0),
     ("step_size", float("nan")), ("random_start", 1), ("l1_sparsity", 1.0)],
)  # fmt: skip
def test_invalid_multistep_arguments_name_the_argument(argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        kg.GradientRegularizer(form="multistep", **{argument: value})


# ------------------------------------------------------------- feature masks

MASK = np.array([1.0, 0.0, 0.5, 2.0])  # a frozen feature and reweighted ones


@pytest.mark.parametrize("form", ["penalty", "perturb", "finite_difference"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_feature_mask_weighs_the_gradient_in_every_form(float64, form, norm):
    """The independent objective with the weighted ball ||r / w||_p <=
    sigma: penalty sigma ||w g||_q, worst case w r*(w g)."""
    x, y, w = _data(seed=13)
    model = _tiny_model(
        6, norm=norm, sigma=0.2, form=form, fd_step=0.01, feature_mask=MASK.tolist()
    )
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    p = NORMS[norm]
    fixed = reference.fixed_perturbation(
        params, x, y, p=p, sigma=0.2, form=form, mask=MASK
    )
    assert np.all(fixed[:, 1] == 0.0)  # the frozen feature never moves
    expected = reference.finite_difference_gradient(
        lambda ps: reference.objective(
            ps, x, y, w, p=p, sigma=0.2, form=form, alpha=0.0, fixed=fixed, mask=MASK
        ),
        params,
    )
    got = _library_gradient(model, x, y, w)
    # The finite-difference quotient (sigma / h = 20) amplifies rounding.
    atol = ATOL * (20 if form == "finite_difference" else 1)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=atol)


@pytest.mark.parametrize("norm", ["linf", "l2", 3.0])
def test_masked_multistep_stays_in_the_weighted_ball(norm):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (16, 4)).astype("float32")
    weights = [np.asarray(MASK, "float32")]
    reg = kg.GradientRegularizer(
        norm=norm, sigma=0.3, form="multistep", steps=5, input_range=(0.0, 1.0)
    )
    erratic = lambda d: [rng.normal(0, 1, x.shape).astype("float32")]  # noqa: E731
    start = multistep.random_unit_start([x], reg.norm, keras.random.SeedGenerator(0))
    (r,) = multistep.maximize(
        erratic, erratic(None), [x], norm=reg.norm, sigma=0.3, steps=reg.steps,
        input_range=reg.input_range, start=start, weights=weights,
    )  # fmt: skip
    r = np.asarray(r)
    assert np.all(r[:, 1] == 0.0)
    scaled = np.delete(r, 1, axis=1) / np.delete(MASK, 1)
    assert np.all(np.linalg.norm(scaled, ord=norm_exponent(norm), axis=1) <= 0.3 + 1e-5)
    assert np.all(x + r >= -1e-6) and np.all(x + r <= 1 + 1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_masked_step_is_the_masked_perturb_form(float64, norm):
    x, y, _ = _data(seed=4)
    mask = dict(feature_mask=MASK.tolist())
    one_step = _tiny_model(
        3, norm=norm, sigma=0.2, form="multistep", steps=1, random_start=False, **mask
    )
    perturb = _tiny_model(3, norm=norm, sigma=0.2, form="perturb", **mask)
    for a, b in zip(
        _library_gradient(one_step, x, y, None), _library_gradient(perturb, x, y, None)
    ):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def _two_input_model(**regularizer):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(4, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = kg.GradRegModel({"a": a, "b": b}, keras.layers.Dense(3)(h), **regularizer)
    model.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.parametrize("form", ["penalty", "perturb"])
def test_per_input_weights_zero_equal_leaving_the_input_out(form):
    """A per-input radius of 0 is the same model as not regularizing that
    input; a radius of 0.5 differs from both."""
    rng = np.random.default_rng(0)
    x = {"a": rng.random((8, 3), "float32"), "b": rng.random((8, 2), "float32")}
    y = rng.integers(0, 3, 8)
    updates = []
    for settings in (
        dict(feature_mask={"b": 0.0}),
        dict(inputs_to_regularize=["a"]),
        dict(feature_mask={"b": 0.5}),
    ):
        keras.utils.set_random_seed(1)
        model = _two_input_model(norm="l2", sigma=0.5, form=form, **settings)
        before = model.get_weights()
        model.train_on_batch(x, y)
        updates.append(
            np.concatenate(
                [(b - a).ravel() for b, a in zip(before, model.get_weights())]
            )
        )
    np.testing.assert_allclose(updates[0], updates[1], rtol=1e-5, atol=1e-7)
    assert not np.allclose(updates[0], updates[2], rtol=1e-3, atol=1e-6)
    keras.utils.set_random_seed(1)
    saved = _two_input_model(norm="l2", sigma=0.5, form=form, feature_mask={"b": 0.5})
    assert (
        kg.GradRegModel.from_config(saved.get_config()).regularizer == saved.regularizer
    )


@pytest.mark.parametrize(
    "mask,message",
    [({"c": 1.0}, r"not regularized.*\['c'\]"), ([1.0, 0.0], "several regularized"),
     ({"a": [1.0, 1.0]}, r"input 'a' must broadcast.*\(3,\)"),
     ({"a": 0.0, "b": 0.0}, "zero on every")],
)  # fmt: skip
def test_feature_mask_errors_name_the_problem(mask, message):
    model = _two_input_model(sigma=0.1, feature_mask=mask)
    x = {"a": np.zeros((4, 3), "float32"), "b": np.zeros((4, 2), "float32")}
    with pytest.raises(ValueError, match=message):
        model.fit(x, np.zeros(4, "int32"), verbose=0)
