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
    x, y, _ = _data(seed=31)
    unit = np.random.default_rng(5).uniform(-1.0, 1.0, x.shape)

    def fixed_start(leaves, norm, seed):
        return [keras.ops.convert_to_tensor(unit, leaves[0].dtype)]

    monkeypatch.setattr(multistep, "random_unit_start", fixed_start)
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
