"""Mixed precision: `mixed_float16` (with loss scaling) and `mixed_bfloat16`.

The regularizer must mean the same thing as in float32: the input gradient
that enters the penalty and r* is `dL/dx`, unscaled, however the optimizer
scales the loss to keep float16 gradients from underflowing.
"""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.training import loss_scale
from tests.helpers import LABELLED_FORMS as FORMS

POLICIES = ("mixed_float16", "mixed_bfloat16")
# Relative agreement of one batch's penalty terms with float32: float16 keeps
# 11 significant bits, bfloat16 8.
TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@pytest.fixture
def policy(request):
    """Runs a test under the dtype policy `request.param`, then restores."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def mlp(**regularizer):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    return kg.GradRegModel(inputs, outputs, **regularizer)


def one_batch_logs(model, weights, x, y):
    """The train-step logs of one full batch with a learning rate of zero."""
    model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss="sparse_categorical_crossentropy",
    )
    return model.fit(x, y, batch_size=len(x), verbose=0).history


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize("form", FORMS)
def test_training_runs_with_finite_logs(policy, form, classification_data):
    x, y = classification_data
    model = mlp(norm="l2", sigma=0.3, form=form, alpha=0.25)
    assert model.compute_dtype == policy.split("_")[1]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    for name in ("loss", "clean_loss", "adv_loss", "grad_norm"):
        assert np.all(np.isfinite(history[name])), (name, history[name])
    assert history["grad_norm"][-1] > 0.0
    # The variables stay float32 (Keras's mixed-precision contract).
    assert all(w.dtype == "float32" for w in model.trainable_weights)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_penalty_terms_match_float32(policy, form, classification_data):
    x, y = classification_data
    settings = dict(norm="l2", sigma=0.5, form=form, alpha=0.0, random_start=False)
    keras.config.set_dtype_policy("float32")
    reference_model = mlp(**settings)
    weights = reference_model.get_weights()
    reference = one_batch_logs(reference_model, weights, x, y)
    keras.config.set_dtype_policy(policy)
    logs = one_batch_logs(mlp(**settings), weights, x, y)
    for name in ("clean_loss", "adv_loss", "grad_norm"):
        np.testing.assert_allclose(
            logs[name], reference[name], rtol=TOLERANCE[policy], err_msg=name
        )


def saturated_linear_model(**regularizer):
    """A linear softmax classifier so confident in class 0 that float16
    backpropagation of the unscaled loss underflows: dL/dlogits is about
    5e-5 and the kernel about 1e-4, so dL/dx is a few 1e-9, below float16's
    smallest subnormal step (6e-8)."""
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(
        3,
        activation="softmax",
        kernel_initializer=keras.initializers.RandomUniform(5e-5, 1.5e-4, seed=0),
        bias_initializer=keras.initializers.Constant([10.0, 0.0, 0.0]),
    )(inputs)
    return kg.GradRegModel(inputs, outputs, **regularizer)


def underflow_case():
    rng = np.random.default_rng(0)
    # A small batch keeps the input-gradient scale S / B large.
    x = rng.random((8, 6)).astype("float32")
    y = np.zeros(8, "int32")
    keras.config.set_dtype_policy("float32")
    reference_model = saturated_linear_model(norm="l2", sigma=1.0)
    weights = reference_model.get_weights()
    reference = one_batch_logs(reference_model, weights, x, y)["grad_norm"][0]
    keras.config.set_dtype_policy("mixed_float16")

    def float16_grad_norm():
        model = saturated_linear_model(norm="l2", sigma=1.0)
        return one_batch_logs(model, weights, x, y)["grad_norm"][0]

    return reference, float16_grad_norm


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_float16_input_gradient_is_taken_under_the_loss_scale(policy):
    reference, float16_grad_norm = underflow_case()
    assert 1e-9 < reference < 1e-6  # the regime the case is built for
    np.testing.assert_allclose(float16_grad_norm(), reference, rtol=2e-2)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_without_the_loss_scale_the_float16_input_gradient_underflows(
    policy, monkeypatch
):
    """The case above is sharp: taking dL/dx of the unscaled loss loses it."""
    reference, float16_grad_norm = underflow_case()
    monkeypatch.setattr(loss_scale, "input_gradient_loss_scale", lambda *_: None)
    unscaled = float16_grad_norm()
    assert abs(unscaled - reference) > 0.2 * reference, (unscaled, reference)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_input_gradient_loss_scale_is_the_optimizers(policy, classification_data):
    x, y = classification_data
    model = mlp(norm="linf", sigma=0.1)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert loss_scale.input_gradient_loss_scale(model.optimizer, x) is None  # unbuilt
    model.fit(x, y, epochs=1, verbose=0)
    scale = loss_scale.input_gradient_loss_scale(model.optimizer, x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(scale),
        keras.ops.convert_to_numpy(model.optimizer.dynamic_scale) / len(x),
        rtol=1e-6,
    )
    assert loss_scale.input_gradient_loss_scale(keras.optimizers.SGD(), x) is None
