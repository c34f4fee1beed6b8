"""FGSM-RS and N-FGSM: one ascent step from a random start, r held
constant in the weight gradient (tests/reference.py is the independent
float64 computation; the random start is fixed so that both see it)."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family import multistep
from tests import reference
from tests.training.test_gradients import (
    ATOL,
    RTOL,
    _data,
    _library_gradient,
    _tiny_model,
)

NORMS = {"linf": math.inf, "l2": 2.0}
MEMBERS = {
    # form -> (step over sigma, noise radius over sigma, projected)
    "fgsm_rs": (1.25, 1.0, True),
    "n_fgsm": (1.0, 2.0, False),
}


@pytest.mark.parametrize("form", list(MEMBERS))
@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_weight_gradient_is_that_of_the_loss_at_the_single_step(
    float64, monkeypatch, form, norm, alpha
):
    sigma, clip = 0.2, (0.0, 1.0)
    x, y, w = _data(seed=31)
    x[:, 2] = 0.95  # some steps reach the top of the input range
    rng = np.random.default_rng(5)
    unit = rng.uniform(-1.0, 1.0, x.shape)
    if norm == "l2":
        unit /= np.linalg.norm(unit, axis=1, keepdims=True) / rng.uniform(0, 1, (6, 1))

    def fixed_start(leaves, norm_, seed):
        assert norm_ == norm
        return [keras.ops.convert_to_tensor(unit, leaves[0].dtype)]

    monkeypatch.setattr(multistep, "random_unit_start", fixed_start)
    step, noise, projected = MEMBERS[form]
    model = _tiny_model(
        5, norm=norm, sigma=sigma, form=form, alpha=alpha, input_range=clip
    )
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    r = reference.single_step_perturbation(
        params, x, y, p=NORMS[norm], start=noise * sigma * unit, step=step * sigma,
        radius=sigma if projected else None, clip=clip,
    )  # fmt: skip
    length = np.linalg.norm(r, ord=NORMS[norm], axis=1)
    if projected:
        assert np.all(length <= sigma + 1e-9)
    else:
        assert np.any(length > 1.5 * sigma)  # N-FGSM leaves the sigma-ball
    expected = reference.finite_difference_gradient(
        lambda ps: reference.objective(
            ps,
            x,
            y,
            w,
            p=NORMS[norm],
            sigma=sigma,
            form="perturb",
            alpha=alpha,
            fixed=r,
            clip=clip,
        ),  # fmt: skip
        params,
    )
    got = _library_gradient(model, x, y, w)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("form", list(MEMBERS))
def test_a_single_step_member_trains_round_trips_and_refuses_what_it_cannot(
    tmp_path, form
):
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    model = kg.GradRegModel(
        inputs, outputs, norm="linf", sigma=0.1, form=form, input_range=(0, 1)
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((16, 6)).astype("float32")
    logs = model.fit(x, np.arange(16) % 3, epochs=1, verbose=0).history
    assert logs["adv_loss"][0] > logs["clean_loss"][0]
    model.save(tmp_path / "m.keras")
    assert (
        keras.saving.load_model(tmp_path / "m.keras").regularizer == model.regularizer
    )
    with pytest.raises(ValueError, match="Received: norm='l1'"):
        kg.GradientRegularizer(norm="l1", form=form)
    with pytest.raises(ValueError, match="Received: feature_mask=0.5"):
        kg.GradientRegularizer(form=form, feature_mask=0.5)
    with pytest.raises(ValueError, match="Received: step=0"):
        kg.forms.get(form).replace(step=0)


@pytest.mark.parametrize("form", [*MEMBERS, "multistep"])
def test_grad_norm_is_the_loss_gradients_at_the_random_start(
    float64, monkeypatch, form
):
    """The members that start from a random point read no dL/dx at x, and
    the step skips that backward (`Form.uses_clean_gradients`); the logged
    `grad_norm` is then the mean `||dL/dx||_1` at the first point they
    differentiate, `clip(x + noise * sigma * u)`."""
    sigma, clip = 0.2, (0.0, 1.0)
    x, y, unit = _batch_with_fixed_start(monkeypatch)
    model = _tiny_model(5, norm="linf", sigma=sigma, form=form, input_range=clip)
    assert not model.regularizer.form.uses_clean_gradients
    assert kg.forms.Multistep(random_start=False).uses_clean_gradients
    noise = MEMBERS[form][1] if form in MEMBERS else 1.0
    start = np.clip(x + noise * sigma * unit, *clip)
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    expected = np.abs(reference.input_gradients(params, start, y)).sum(1).mean()
    at_x = np.abs(reference.input_gradients(params, x, y)).sum(1).mean()
    assert abs(expected - at_x) > 1e-3 * at_x  # the two points tell apart
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["grad_norm"] == pytest.approx(expected, rel=1e-6)  # a float32 metric


@pytest.mark.parametrize("form", [*MEMBERS, "multistep"])
@pytest.mark.parametrize("clean_metrics", [True, False])
def test_without_the_clean_pass_the_update_holds_and_metrics_read_the_perturbed_pass(
    float64, monkeypatch, form, clean_metrics
):
    """`clean_metrics=False` skips the forward pass at x, which these forms
    read nothing from at alpha = 0: the weight update is still that of
    `L(x + r)` (float64 finite differences), and the compiled metric reads
    the perturbed pass's outputs, not the clean ones."""
    sigma, clip = 0.2, (0.0, 1.0)
    x, y, unit = _batch_with_fixed_start(monkeypatch)
    if form == "multistep":  # one step of length 1.25 sigma: FGSM-RS's
        step, noise, form_object = (
            1.25,
            1.0,
            kg.forms.Multistep(
                steps=1, step_size=1.25 * sigma, clean_metrics=clean_metrics
            ),
        )
    else:
        step, noise, _ = MEMBERS[form]
        form_object = kg.forms.get(form).replace(clean_metrics=clean_metrics)
    model = _tiny_model(5, norm="linf", sigma=sigma, form=form_object, input_range=clip)
    metric = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metric],
    )
    assert model.regularizer.form.needs_clean_pass(0.0) is clean_metrics
    params = [np.array(v, dtype="float64") for v in model.get_weights()]
    r = reference.single_step_perturbation(
        params, x, y, p=math.inf, start=noise * sigma * unit, step=step * sigma,
        radius=sigma if form != "n_fgsm" else None, clip=clip,
    )  # fmt: skip

    def loss_at_r(ps):
        return reference.objective(
            ps, x, y, 1.0, p=math.inf, sigma=sigma, form="perturb", alpha=0.0,
            fixed=r, clip=clip,
        )  # fmt: skip

    expected = reference.finite_difference_gradient(loss_at_r, params)
    before = [np.array(w) for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    got = [b - np.array(a) for b, a in zip(before, model.get_weights())]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    clean = reference.example_losses(params, x, y).mean()
    perturbed = reference.example_losses(params, np.clip(x + r, *clip), y).mean()
    assert abs(perturbed - clean) > 1e-2 * clean  # the two tell apart
    read = perturbed if not clean_metrics else clean
    assert logs[metric.name] == pytest.approx(read, rel=1e-6)
    assert ("clean_loss" in logs) is clean_metrics
    assert logs["adv_loss"] == pytest.approx(perturbed, rel=1e-6)


@pytest.mark.parametrize("form", [*MEMBERS, "multistep"])
def test_clean_metrics_false_is_refused_where_the_clean_pass_is_taken_anyway(form):
    no_clean = kg.forms.get(form).replace(clean_metrics=False)
    with pytest.raises(ValueError, match=r"Received: alpha=0\.5"):
        kg.GradientRegularizer(form=no_clean, alpha=0.5)
    with pytest.raises(ValueError, match="Received: clean_metrics='no'"):
        kg.forms.get(form).replace(clean_metrics="no")
    assert kg.GradientRegularizer(form=no_clean).form == no_clean
    if form == "multistep":
        with pytest.raises(ValueError, match="random_start=False"):
            kg.GradientRegularizer(form=no_clean.replace(random_start=False))


def _batch_with_fixed_start(monkeypatch):
    """`(x, y, u)`: a batch and the unit-ball draw every random start then
    returns, so that the library and the reference see the same start."""
    x, y, _ = _data(seed=31)
    unit = np.random.default_rng(5).uniform(-1.0, 1.0, x.shape)

    def fixed_start(leaves, norm, seed):
        return [keras.ops.convert_to_tensor(unit, leaves[0].dtype)]

    monkeypatch.setattr(multistep, "random_unit_start", fixed_start)
    return x, y, unit
