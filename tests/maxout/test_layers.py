"""Maxout and MaxoutConv2D: grouping, shapes, config, saving, gradients."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.maxout.layers import Maxout, MaxoutConv2D
from tests import reference
from tests.conftest import BACKEND


def test_maxout_groups_contiguous_pieces():
    layer = Maxout(units=2, pieces=3, use_bias=False)
    layer.build((None, 4))
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(4, 6)).astype("float32")
    layer.set_weights([kernel])
    x = rng.normal(size=(5, 4)).astype("float32")
    expected = (x @ kernel).reshape(5, 2, 3).max(axis=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5
    )


def test_maxout_keeps_leading_axes():
    layer = Maxout(units=3, pieces=2)
    out = layer(np.ones((2, 7, 5), "float32"))
    assert tuple(out.shape) == (2, 7, 3) == layer.compute_output_shape((2, 7, 5))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv_maxout_groups_contiguous_channels(data_format):
    if BACKEND == "tensorflow" and data_format == "channels_first":
        pytest.skip("TensorFlow's CPU convolution has no channels_first kernel")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 9, 3)).astype("float32")
    conv = keras.layers.Conv2D(8, 3, padding="same")
    reference_out = conv(x)  # channels_last reference, 8 = 4 filters x 2 pieces
    layer = MaxoutConv2D(4, 2, 3, padding="same", data_format=data_format)
    xin = x if data_format == "channels_last" else np.transpose(x, (0, 3, 1, 2))
    layer.build(xin.shape)
    layer.set_weights(conv.get_weights())
    out = keras.ops.convert_to_numpy(layer(xin))
    if data_format == "channels_first":
        out = np.transpose(out, (0, 2, 3, 1))
    expected = keras.ops.convert_to_numpy(reference_out).reshape(2, 9, 9, 4, 2).max(-1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert tuple(layer.compute_output_shape(xin.shape)) == tuple(layer(xin).shape)


def test_conv_output_shape_with_strides_and_valid_padding():
    layer = MaxoutConv2D(filters=5, pieces=3, kernel_size=(8, 8), strides=2)
    out = layer(np.zeros((1, 28, 28, 1), "float32"))
    assert (
        tuple(out.shape)
        == (1, 11, 11, 5)
        == tuple(layer.compute_output_shape((1, 28, 28, 1)))
    )


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Maxout(0, 2), "units=0"),
        (lambda: Maxout(3, 0), "pieces=0"),
        (lambda: Maxout(3, 2.5), "pieces=2.5"),
        (lambda: MaxoutConv2D(0, 2, 3), "filters=0"),
        (lambda: MaxoutConv2D(4, -1, 3), "pieces=-1"),
        (lambda: MaxoutConv2D(4, 2, 0), "kernel_size"),
        (lambda: MaxoutConv2D(4, 2, 3, padding="full"), "padding='full'"),
        (lambda: Maxout(3, 2, max_norm=-1.0), "max_norm=-1.0"),
        (lambda: Maxout(3, 2, max_norm=2.0, kernel_constraint="non_neg"), "not both"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError):
        Maxout(3, 2)(np.zeros((4,), "float32"))
    with pytest.raises(ValueError):
        MaxoutConv2D(3, 2, 3)(np.zeros((4, 8, 8), "float32"))


@pytest.mark.parametrize(
    "layer",
    [
        Maxout(
            4, 3, max_norm=1.9365, kernel_regularizer="l2", use_bias=False, name="mx"
        ),
        MaxoutConv2D(
            6, 2, (5, 3), strides=(2, 1), padding="same", max_norm=0.9, name="mc"
        ),
    ],
)
def test_get_config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer)
        ).get_config()
        == layer.get_config()
    )


def test_max_norm_constraint_bounds_kernel_columns():
    inputs = keras.Input((20,))
    layer = Maxout(
        8,
        2,
        max_norm=0.5,
        kernel_initializer=keras.initializers.RandomNormal(stddev=2.0),
    )
    outputs = keras.layers.Dense(3, activation="softmax")(layer(inputs))
    model = kg.GradRegModel(inputs, outputs, sigma=0.1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(
        rng.random((32, 20)), rng.integers(0, 3, 32), epochs=1, batch_size=32, verbose=0
    )
    norms = np.linalg.norm(np.array(layer.kernel), axis=0)
    assert norms.max() <= 0.5 + 1e-5


def _maxout_net(**regularizer):
    inputs = keras.Input((4,))
    h = Maxout(3, 2)(inputs)
    outputs = keras.layers.Dense(3)(h)
    return kg.GradRegModel(inputs, outputs, **regularizer)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_penalty_gradient_through_maxout_matches_finite_differences(float64, norm):
    """Second derivatives through the max: the penalty form's weight gradient
    against finite differences of an independent NumPy objective."""
    rng = np.random.default_rng(4)
    model = _maxout_net(norm=norm, sigma=0.3)
    model.set_weights([rng.normal(0, 0.8, w.shape) for w in model.get_weights()])
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = rng.uniform(0, 1, (6, 4))
    y = rng.integers(0, 3, 6).astype("int32")
    params = [np.array(w, "float64") for w in model.get_weights()]
    q = {"linf": 1, "l2": 2}[norm]

    def objective(ps):
        g = reference.maxout_input_gradients(ps, x, y, 2)
        return np.mean(
            reference.maxout_losses(ps, x, y, 2)
            + 0.3 * np.linalg.norm(g, ord=q, axis=1)
        )

    expected = reference.finite_difference_gradient(objective, params)
    before = model.get_weights()
    model.train_on_batch(x, y)
    got = [b - a for b, a in zip(before, model.get_weights())]
    rtol, atol = (1e-6, 1e-8) if BACKEND == "tensorflow" else (5e-5, 1e-6)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def test_input_gradient_of_maxout_matches_closed_form(float64):
    rng = np.random.default_rng(5)
    model = _maxout_net()
    model.set_weights([rng.normal(0, 0.8, w.shape) for w in model.get_weights()])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.uniform(0, 1, (5, 4))
    y = rng.integers(0, 3, 5).astype("int32")
    params = [np.array(w, "float64") for w in model.get_weights()]
    expected = reference.maxout_input_gradients(params, x, y, 2)
    x_adv = kg.fgm(model, x, y, "l2", 1.0, input_range=None)
    direction = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(x_adv - x, direction, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True] if BACKEND != "torch" else [False])
def test_saved_maxout_gradreg_model_loads_and_trains(tmp_path, jit):
    inputs = keras.Input((8, 8, 1))
    h = MaxoutConv2D(4, 2, 3, max_norm=1.9365)(inputs)
    h = Maxout(6, 2)(keras.layers.Flatten()(h))
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.2)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert math.isfinite(loaded.fit(x, y, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.parametrize(
    "padding,strides,dilation", [("valid", 1, 1), ("same", 2, 1), ("valid", 2, 1), ("valid", 1, 2), ("same", 3, 1)]
)  # fmt: skip
def test_maxout_conv_output_shape_matches_the_call_without_naming_layers(
    padding, strides, dilation
):
    layer = MaxoutConv2D(
        3, 2, 3, strides=strides, padding=padding, dilation_rate=dilation
    )
    x = np.ones((2, 11, 9, 1), "float32")

    def conv_number():
        name = keras.layers.Conv2D(1, 1).name  # conv2d, conv2d_1, ...
        return int(name.rsplit("_", 1)[-1]) if "_" in name else 0

    before = conv_number()
    shape = layer.compute_output_shape(x.shape)
    assert conv_number() == before + 1  # no throw-away Conv2D took a name
    assert tuple(shape) == tuple(layer(x).shape)
    assert layer.compute_output_shape((None, None, 9, 1))[1] is None
