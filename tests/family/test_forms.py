"""The forms as objects: shorthands, configs, checks, and a new member
defined outside the library trained without any change to it."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.family import forms
from tests.helpers import compile_

#: One object of each form with arguments other than its defaults.
CHANGED = [
    forms.Penalty(),
    forms.Perturb(share_noise=False),
    forms.FiniteDifference(step=0.05),
    forms.Multistep(steps=3, step_size=0.2, random_start=False, l1_sparsity=0.5),
    forms.Virtual(weight=0.5, xi=0.1, power_iterations=2),
]

BAD_ARGUMENTS = [
    (forms.Perturb, {"share_noise": 1}),
    (forms.FiniteDifference, {"step": 0.0}),
    (forms.FiniteDifference, {"step": float("inf")}),
    (forms.Multistep, {"steps": 0}),
    (forms.Multistep, {"steps": 2.5}),
    (forms.Multistep, {"step_size": -1.0}),
    (forms.Multistep, {"random_start": "yes"}),
    (forms.Multistep, {"l1_sparsity": 1.0}),
    (forms.Multistep, {"share_noise": None}),
    (forms.Virtual, {"weight": -0.1}),
    (forms.Virtual, {"xi": 0.0}),
    (forms.Virtual, {"power_iterations": True}),
]


@pytest.mark.parametrize("name", forms.names())
def test_each_shorthand_builds_the_default_object(name):
    built = forms.get(name)
    assert built.name == name and built == type(built)()
    assert kg.GradientRegularizer(form=name).form == built
    assert built == name  # a form compares equal to the shorthand it is


def test_the_paper_forms_and_the_label_free_member_are_registered():
    assert set(kg.FORMS) >= {
        "penalty", "perturb", "finite_difference", "multistep", "virtual"
    }  # fmt: skip
    with pytest.raises(ValueError, match="Received: form='adversarial'"):
        forms.get("adversarial")


@pytest.mark.parametrize("form", CHANGED, ids=lambda f: f.name)
def test_a_form_round_trips_through_its_config(form):
    assert type(form).from_config(form.get_config()) == form
    serialized = keras.saving.serialize_keras_object(form)
    assert forms.get(serialized) == form
    assert keras.saving.deserialize_keras_object(serialized) == form
    reg = kg.GradientRegularizer(norm="linf", sigma=0.2, form=form, alpha=0.0)
    assert kg.GradientRegularizer.from_config(reg.get_config()) == reg
    assert form != forms.get(form.name) or form == forms.Penalty()


@pytest.mark.parametrize("form", CHANGED, ids=lambda f: f.name)
def test_a_form_round_trips_through_a_keras_file(tmp_path, form):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.2, form=form)
    compile_(model)
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.regularizer == model.regularizer
    assert type(loaded.regularizer.form) is type(form)


@pytest.mark.parametrize("cls,kwargs", BAD_ARGUMENTS)
def test_a_bad_argument_names_the_argument_and_the_value(cls, kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}={value!r}"):
        cls(**kwargs)


def test_the_keyword_arguments_of_0_1_0_go_to_the_form():
    reg = kg.GradientRegularizer(form="multistep", steps=3, random_start=False)
    assert reg.form == forms.Multistep(steps=3, random_start=False)
    assert reg.steps == 3 and reg.replace(steps=5).form.steps == 5
    fd = kg.GradientRegularizer(form="finite_difference", fd_step=0.05)
    assert fd.form == forms.FiniteDifference(step=0.05) and fd.fd_step == 0.05
    vat = kg.GradientRegularizer(form="perturb", virtual=True, virtual_weight=0.5)
    assert vat.form == forms.Virtual(weight=0.5) and vat.virtual is True
    with pytest.raises(ValueError, match="Received: virtual_weight=-1"):
        kg.GradientRegularizer(virtual=True, virtual_weight=-1.0)
    with pytest.warns(UserWarning, match="`steps` belongs to the form"):
        kg.GradientRegularizer(form="penalty", steps=3)
    with pytest.raises(ValueError, match="Received unknown keys: \\['stepz'\\]"):
        kg.GradientRegularizer(stepz=3)
    with pytest.raises(AttributeError, match="Penalty has no argument `steps`"):
        kg.GradientRegularizer().steps  # noqa: B018


def test_a_config_written_by_0_1_0_loads_as_the_same_member():
    flat = {
        "norm": "linf", "sigma": 0.3, "form": "multistep", "alpha": 0.5,
        "fd_step": 0.01, "input_range": [0.0, 1.0], "inputs_to_regularize": None,
        "steps": 4, "step_size": None, "random_start": False, "l1_sparsity": 0.95,
        "feature_mask": None, "virtual": False, "xi": 0.01, "power_iterations": 1,
        "virtual_weight": 1.0, "labeled_rows": None, "share_noise": True,
    }  # fmt: skip
    reg = kg.GradientRegularizer.from_config(flat)
    assert reg == kg.GradientRegularizer(
        norm="linf", sigma=0.3, alpha=0.5, input_range=(0.0, 1.0),
        form=forms.Multistep(steps=4, random_start=False),
    )  # fmt: skip
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    config = {**kg.GradRegModel(inputs, outputs).get_config(), **flat}
    assert kg.GradRegModel.from_config(config).regularizer == reg


class HalfRadius(forms.Form):
    """A member defined outside the library: the perturb form at sigma / 2.
    Nothing in the backends or in `GradRegModel` knows of it."""

    name = "test_half_radius"

    def terms(self, context):
        adv_loss = context.perturbed_loss(context.worst_case(0.5 * context.sigma))
        return context.mixed(adv_loss), adv_loss

    def uses_clean_loss(self, alpha):
        return alpha > 0.0


keras.saving.register_keras_serializable("tests")(HalfRadius)


def _one_step(form, sigma, tmp_path=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=sigma, form=form)
    compile_(model, lr=0.1)
    rng = np.random.default_rng(1)
    x, y = rng.random((16, 5)).astype("float32"), rng.integers(0, 3, 16)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    if tmp_path is not None:
        model.save(tmp_path / "half.keras")
    return model.get_weights()


def test_a_new_member_is_one_class_and_trains_through_fit(tmp_path):
    assert "test_half_radius" in forms.names()
    got = _one_step("test_half_radius", 0.8, tmp_path)
    expected = _one_step(forms.Perturb(), 0.4)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    plain = _one_step(forms.Perturb(), 0.8)
    assert not all(np.allclose(a, b) for a, b in zip(got, plain))
    loaded = keras.saving.load_model(tmp_path / "half.keras")
    assert isinstance(loaded.regularizer.form, HalfRadius)
