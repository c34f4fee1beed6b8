"""The cross-entropy of softmax outputs keeps its gradient past Keras's clip."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradreg as kg
from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.training import backend, objective
from keras_gradreg.src.training.crossentropy import probability_crossentropy

# A linear softmax classifier z = x W + b: dL/dx_i = (p_i - e_{y_i}) W^T.
W = np.array([[4.0, -3.0, 1.0], [-2.0, 5.0, 0.5], [3.0, 1.0, -4.0], [-1.0, -2.0, 6.0]])
B = np.array([0.5, -0.5, 0.0])
# Rows 0 and 1 are classified with margins of 23.5 and 17.5 (the other classes'
# probabilities below 3e-8, so Keras's clip at 1 - 1e-7 binds), row 2 is not.
X = np.array([[3.0, 0.0, 2.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.2, 0.1, 0.3, 0.2]])
Y = np.array([0, 1, 2], dtype="int32")
WEIGHTS = np.array([0.5, 2.0, 1.5])


def _linear_softmax(dtype="float64", **regularizer):
    inputs = keras.Input((4,), dtype=dtype)
    outputs = keras.layers.Dense(3, activation="softmax", dtype=dtype)(inputs)
    model = kg.GradRegModel(inputs, outputs, **regularizer)
    model.set_weights([W, B])
    return model


def _closed_form(weights=None):
    z = X @ W + B
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - np.eye(3)[Y]
    if weights is not None:
        residual *= weights[:, None] / len(X)
    return residual @ W.T


def _input_gradient(model, loss, labels, weights=None):
    model.compile(optimizer="sgd", loss=loss)

    def fn(x):
        y_pred = model(x)
        if weights is None:
            value = objective.summed_loss(model, labels, y_pred)
        else:
            value = objective.compiled_loss(model, labels, y_pred, weights)
        return ops.reshape(value, (1,)), None

    x = ops.convert_to_tensor(X)
    return ops.convert_to_numpy(backend.values_and_input_gradient(fn, x)[2])


@pytest.mark.parametrize(
    "loss, labels",
    [
        ("sparse_categorical_crossentropy", Y),
        (keras.losses.CategoricalCrossentropy(), np.eye(3)[Y]),
    ],
    ids=["sparse", "one-hot"],
)
def test_input_gradient_of_a_saturated_softmax_is_the_closed_form(
    float64, loss, labels
):
    model = _linear_softmax()
    labels = ops.convert_to_tensor(labels)
    assert np.all(ops.convert_to_numpy(model(X))[[0, 1], [0, 1]] > 1 - 1e-7)
    gradient = _input_gradient(model, loss, labels)
    np.testing.assert_allclose(gradient, _closed_form(), rtol=1e-6, atol=1e-300)
    assert np.all(np.abs(gradient[:2]).max(axis=1) > 1e-10)  # not the clip's 0


def test_weighted_loss_gradient_is_the_closed_form(float64):
    model = _linear_softmax()
    weights = ops.convert_to_tensor(WEIGHTS)
    gradient = _input_gradient(model, "sparse_categorical_crossentropy", Y, weights)
    np.testing.assert_allclose(gradient, _closed_form(WEIGHTS), rtol=1e-6, atol=1e-300)


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_loss_value_is_keras_own(float64, weights):
    model = _linear_softmax()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    y_pred = model(X)
    keras_value = _keras_compat.compiled_loss(model, Y, y_pred, weights)
    ours = objective.compiled_loss(model, Y, y_pred, weights)
    np.testing.assert_allclose(
        ops.convert_to_numpy(ours), ops.convert_to_numpy(keras_value), rtol=1e-12
    )


def test_perturbed_form_moves_a_confidently_classified_image():
    # float32, as trained: before the fix JAX and torch saw dL/dx = 0 here,
    # so r* = 0 and the "adversarial" loss was the clean one.
    model = _linear_softmax("float32", norm="linf", sigma=1.5, form="perturb")
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy"
    )
    x, y = X[:2].astype("float32"), Y[:2]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["grad_norm"] > 0.0
    assert logs["adv_loss"] > 100 * logs["clean_loss"]


def _penalty_step(margin):
    """One SGD step (learning rate 1) of the linf penalty, sigma 0.1, on a
    float32 linear softmax that gives the true class 0 a logit about
    `margin` below class 1's; returns the kernel's change and the logs."""
    # Small entries elsewhere keep every dL/dx_i away from 0, where |.| has
    # no derivative (JAX and torch take different subgradients there).
    kernel = np.array(
        [[0.3, 0.0, -0.2], [-0.4, 0.1, 0.2], [0.1, -0.3, 0.4], [0.2, 0.3, -0.1]],
        "float32",
    )
    kernel[0, 1] += margin
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    model = kg.GradRegModel(inputs, outputs, norm="linf", sigma=0.1, form="penalty")
    model.compile(
        optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy"
    )
    model.set_weights([kernel, np.zeros(3, "float32")])
    x = np.array([[1.0, 0.5, -0.5, 0.2]], "float32")
    logs = model.train_on_batch(x, np.array([0]), return_dict=True)
    return model.get_weights()[0] - kernel, kernel, x[0].astype("float64"), logs


def _log_p(kernel, x):
    z = x @ kernel
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def _gradient_l1_norm(kernel, x):
    """`||dL/dx||_1` of the linear softmax for the true class 0, in float64."""
    return np.abs(kernel @ (np.exp(_log_p(kernel, x)) - np.eye(3)[0])).sum()


def _penalty_objective(kernel, x, sigma=0.1):
    """`-log p_0 + sigma ||dL/dx||_1` of the linear softmax, in float64."""
    return -_log_p(kernel, x)[0] + sigma * _gradient_l1_norm(kernel, x)


@pytest.mark.parametrize("margin", [46.0, 60.0])
def test_a_penalty_step_on_a_grossly_misclassified_example_stays_finite(margin):
    # p_0 = e^-margin: the second derivative of log p, 1/p^2, overflowed
    # float32 (1e40 at margin 46) and made every weight NaN on all backends.
    change, kernel, x, logs = _penalty_step(margin)
    assert np.all(np.isfinite(change)) and np.isfinite(logs["loss"])
    if keras.backend.backend() == "tensorflow":  # the logits Keras keeps: exact
        norm = _gradient_l1_norm(kernel.astype("float64"), x)
        assert logs["grad_norm"] == pytest.approx(norm, rel=1e-5)


def test_penalty_step_near_the_floor_is_the_finite_difference_gradient():
    # Margin about 30: p_0 near 1e-13, above the second-order floor, far
    # below the clip.
    change, kernel, x, logs = _penalty_step(30.0)
    kernel = kernel.astype("float64")
    expected = np.zeros_like(kernel)
    h = 1e-6
    for index in np.ndindex(kernel.shape):
        step = np.zeros_like(kernel)
        step[index] = h
        expected[index] = -(
            _penalty_objective(kernel + step, x) - _penalty_objective(kernel - step, x)
        ) / (2 * h)
    np.testing.assert_allclose(change, expected, rtol=1e-4, atol=1e-4)
    assert logs["grad_norm"] == pytest.approx(_gradient_l1_norm(kernel, x), rel=1e-5)


def test_which_losses_are_probability_crossentropies():
    def sparse_categorical_crossentropy(y, p):  # a namesake, not Keras's
        return keras.losses.sparse_categorical_crossentropy(y, p)

    assert probability_crossentropy("sparse_categorical_crossentropy") is True
    assert probability_crossentropy("categorical_crossentropy") is False
    assert probability_crossentropy("SparseCategoricalCrossentropy") is True
    assert probability_crossentropy("CategoricalCrossentropy") is False
    assert probability_crossentropy(keras.losses.sparse_categorical_crossentropy)
    assert probability_crossentropy(keras.losses.SparseCategoricalCrossentropy())
    assert probability_crossentropy(keras.losses.CategoricalCrossentropy()) is False
    for other in (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.SparseCategoricalCrossentropy(ignore_class=0),
        keras.losses.SparseCategoricalCrossentropy(reduction="sum"),
        "mse",
        sparse_categorical_crossentropy,
        None,
    ):
        assert probability_crossentropy(other) is None, other
