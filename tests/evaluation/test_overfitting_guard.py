"""The catastrophic-overfitting guard: it stops when PGD accuracy on held
training data collapses and restores the best epoch's weights."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg


class _Scripted(kg.callbacks.CatastrophicOverfittingGuard):
    """The guard with robust accuracies given in advance per epoch."""

    def __init__(self, values, **kwargs):
        x = np.zeros((4, 3), "float32")
        super().__init__((x, np.zeros(4, "int32")), eps=0.1, **kwargs)
        self.values = list(values)

    def robust_accuracy(self):
        return self.values.pop(0)


def _model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    return model


def test_a_collapse_stops_training_and_restores_the_best_weights():
    model = _model()
    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    seen = []

    class Weights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    guard = _Scripted([0.40, 0.55, 0.50, 0.10, 0.60], drop=0.2)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[Weights(), guard])
    assert history.history["train_pgd_accuracy"] == [0.40, 0.55, 0.50, 0.10]
    assert (guard.best_epoch, guard.stopped_epoch) == (1, 3)
    for restored, best in zip(model.get_weights(), seen[1]):
        np.testing.assert_array_equal(restored, best)
    # A fall within `drop` goes on.
    steady = _Scripted([0.40, 0.30, 0.45], drop=0.2)
    assert len(_model().fit(x, y, epochs=3, verbose=0, callbacks=[steady]).epoch) == 3
    assert steady.stopped_epoch is None


def test_the_guard_attacks_held_training_data_with_pgd():
    rng = np.random.default_rng(1)
    x = rng.random((64, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    model = _model()
    model.fit(x, y, epochs=3, verbose=0)
    guard = kg.callbacks.CatastrophicOverfittingGuard((x, y), eps=0.3, subset_size=32)
    guard.set_model(model)
    robust = guard.robust_accuracy()
    clean = float(np.mean(np.argmax(model.predict(guard.x, verbose=0), 1) == guard.y))
    assert 0.0 <= robust <= clean
    assert guard.attack.name == "PGD-10" and len(guard.x) == 32


@pytest.mark.parametrize(
    "kwargs,message",
    [({"drop": 0.0}, "Received: drop=0.0"), ({"drop": 1.5}, "Received: drop=1.5"),
     ({"restore_best_weights": 1}, "Received: restore_best_weights=1"),
     ({"eps": -1.0}, "Received: eps=-1.0")],
)  # fmt: skip
def test_bad_arguments_name_the_argument_and_value(kwargs, message):
    x, y = np.zeros((4, 3), "float32"), np.zeros(4, "int32")
    with pytest.raises(ValueError, match=message):
        kg.callbacks.CatastrophicOverfittingGuard((x, y), **kwargs)
