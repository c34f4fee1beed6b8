"""Which inputs a GradRegModel differentiates: integer inputs skipped,
several float inputs penalized jointly, and clear errors for inputs that
cannot be differentiated (`keras_gradreg/src/family/inputs.py`)."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests.helpers import LABELLED_FORMS as FORMS
from tests.helpers import compile_


def _two_input_model(**regularizer):
    image = keras.Input((5,), name="image")
    tokens = keras.Input((3,), dtype="int32", name="tokens")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 2)(tokens))
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(image), embedded])
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    return kg.GradRegModel({"image": image, "tokens": tokens}, outputs, **regularizer)


def _two_inputs(n=16):
    rng = np.random.default_rng(1)
    return (
        {
            "image": rng.random((n, 5)).astype("float32"),
            "tokens": rng.integers(0, 10, (n, 3)).astype("int32"),
        },
        rng.integers(0, 3, n),
    )


@pytest.mark.parametrize("form", FORMS)
def test_dict_inputs_skip_integer_tokens(form):
    x, y = _two_inputs()
    model = compile_(_two_input_model(norm="linf", sigma=0.1, form=form))
    history = model.fit(x, y, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["grad_norm"][0] > 0


def test_joint_gradient_over_several_float_inputs():
    """With two float inputs the penalized norm is taken jointly: the linf
    member's ||g||_1 is the sum over both inputs."""
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.Concatenate()([a, b])
    )
    rng = np.random.default_rng(0)
    x = {
        "a": rng.random((8, 3)).astype("float32"),
        "b": rng.random((8, 2)).astype("float32"),
    }
    y = rng.integers(0, 3, 8)
    logged = {}
    for names in (None, ["a"], ["b"]):
        model = kg.GradRegModel(
            {"a": a, "b": b},
            outputs,
            norm="linf",
            sigma=0.1,
            inputs_to_regularize=names,
        )
        compile_(model, lr=0.0)
        logged[str(names)] = model.fit(x, y, batch_size=8, verbose=0).history[
            "grad_norm"
        ][0]
    assert logged["None"] == pytest.approx(logged["['a']"] + logged["['b']"], rel=1e-5)


def test_no_differentiable_input_is_a_clear_error():
    tokens = keras.Input((3,), dtype="int32")
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Embedding(10, 2)(tokens))
    )
    model = compile_(kg.GradRegModel(tokens, outputs, sigma=0.1))
    with pytest.raises(ValueError, match="no floating-point input"):
        model.fit(np.zeros((4, 3), "int32"), np.zeros(4), verbose=0)


def test_unknown_input_name_is_a_clear_error():
    x, y = _two_inputs()
    model = compile_(_two_input_model(sigma=0.1, inputs_to_regularize=["pixels"]))
    with pytest.raises(ValueError, match="inputs_to_regularize"):
        model.fit(x, y, verbose=0)


def _discretized_model(**regularizer):
    image = keras.Input((3,), name="image")
    bucketed = keras.Input((2,), name="bucketed")
    bins = keras.layers.Discretization(bin_boundaries=[0.5])(bucketed)
    h = keras.layers.Concatenate()([image, keras.ops.cast(bins, "float32")])
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = kg.GradRegModel(
        {"image": image, "bucketed": bucketed}, outputs, **regularizer
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def test_a_float_input_without_differentiable_path_is_refused_on_every_backend():
    rng = np.random.default_rng(0)
    x = {
        "image": rng.random((8, 3)).astype("float32"),
        "bucketed": rng.random((8, 2)).astype("float32"),
    }
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match="'bucketed'.*inputs_to_regularize"):
        _discretized_model(sigma=0.1).fit(x, y, verbose=0)
    model = _discretized_model(sigma=0.1, inputs_to_regularize=["image"])
    history = model.fit(x, y, verbose=0).history
    assert history["grad_norm"][0] > 0


def test_subclassed_input_without_differentiable_path_is_refused_at_run_time():
    class Binned(kg.GradRegModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.dense(keras.ops.cast(x > 0.5, "float32"))

    model = Binned(sigma=0.1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    with pytest.raises(ValueError, match="no differentiable path"):
        model.fit(x, np.arange(8) % 2, verbose=0)


def test_fit_refuses_inputs_outside_the_input_range():
    """Images left at 0-255 with input_range=(0, 1) would train on clipped
    perturbed inputs without a word: `fit` refuses them, in memory and on a
    dataset's first batch, and names the range and the values."""
    model = compile_(_two_input_model(sigma=0.1, form="perturb", input_range=(0, 1)))
    x, y = _two_inputs()
    model.fit(x, y, verbose=0)  # inside the range
    x["image"] = x["image"] * 255.0
    message = r"input_range=\(0.0, 1.0\).*Received: x in \[[\d.]+, 2\d\d\.\d+\]"
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, verbose=0)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return {k: v[index * 8 : index * 8 + 8] for k, v in x.items()}, y[:8]

    with pytest.raises(ValueError, match=message):
        model.fit(Batches(), verbose=0)
    # The integer tokens are not regularized and not checked; a plain model
    # (sigma = 0) clips nothing and trains on any range.
    plain = compile_(_two_input_model(sigma=0.0, input_range=(0, 1)))
    plain.fit(x, y, verbose=0)
