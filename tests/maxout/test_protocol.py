"""The maxout protocol's pieces: schedules, optimizer, stopping, resume."""

import json
import shutil

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.maxout.optimizers import (
    FlooredExponentialDecay,
    LinearDecay,
    MomentumSGD,
)
from keras_gradreg.src.maxout.protocol import (
    MAXOUT_PROTOCOLS,
    ContinueUntilMatched,
    MaxoutProtocol,
    MomentumSchedule,
    NoisyLoss,
    ResumableEarlyStopping,
    noisy_loss,
    train_then_continue,
)


def test_floored_exponential_decay_values():
    schedule = FlooredExponentialDecay(0.1, 1.000004, 1e-6)
    steps = np.array([0, 1, 1000, 121_500], "float32")
    expected = 0.1 / 1.000004 ** steps.astype("float64")
    got = [float(schedule(s)) for s in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(FlooredExponentialDecay(0.1, 1.001, 0.01)(10_000)) == pytest.approx(
        0.01
    )
    restored = FlooredExponentialDecay.from_config(schedule.get_config())
    assert float(restored(500)) == pytest.approx(float(schedule(500)))


@pytest.mark.parametrize(
    "kwargs",
    [{"decay_factor": 0.9}, {"min_learning_rate": 1.0}, {"initial_learning_rate": 0}],
)
def test_floored_exponential_decay_refuses_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        FlooredExponentialDecay(**{"initial_learning_rate": 0.1, **kwargs})


def test_linear_decay_follows_pylearn2_over_epochs():
    """pylearn2's `LinearDecayOverEpoch(start=1, saturate=500,
    decay_factor=0.01)`: equal steps of 0.99 * lr0 / 500 per epoch from the
    first, then lr0 * 0.01, read from the update count by epoch."""
    schedule = LinearDecay(0.17, steps_per_epoch=10, start=1, saturate=500)
    step = 0.17 * 0.99 / 500
    for update, epoch in ((0, 1), (9, 1), (10, 2), (2495, 250), (4989, 499)):
        expected = 0.17 - step * epoch
        assert float(schedule(update)) == pytest.approx(expected, rel=1e-5), update
    for update in (4990, 10**6):
        assert float(schedule(update)) == pytest.approx(0.0017, rel=1e-5)
    late = LinearDecay(1.0, steps_per_epoch=1, start=3, saturate=5, decay_factor=0.0)
    assert [float(late(t)) for t in range(6)] == pytest.approx(
        [1.0, 1.0, 2 / 3, 1 / 3, 0.0, 0.0]
    )
    restored = LinearDecay.from_config(schedule.get_config())
    assert float(restored(777)) == pytest.approx(float(schedule(777)))
    for kwargs, name in (({"steps_per_epoch": 0}, "steps_per_epoch"),
                         ({"saturate": 1}, "saturate"),
                         ({"decay_factor": 1.5}, "decay_factor")):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            LinearDecay(0.1, **{"steps_per_epoch": 10, **kwargs})


def test_learning_rate_scales_slow_the_named_layers_only():
    """pylearn2's `W_lr_scale`: one SGD step moves a scaled layer's weights
    by the factor times the unscaled step, the other layers by the step."""
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 3)).astype("float32"), rng.integers(0, 2, 8)

    def one_step(scales):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="tanh", name="slow"),
                keras.layers.Dense(2, activation="softmax", name="fast"),
            ]
        )
        optimizer = MomentumSGD(0.5, momentum=0.5, learning_rate_scales=scales)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        before = [np.array(w) for w in model.get_weights()]
        model.train_on_batch(x, y)
        return [np.array(w) - b for w, b in zip(model.get_weights(), before)]

    plain, scaled = one_step(None), one_step({"slow": 0.05})
    for i, (a, b) in enumerate(zip(plain, scaled)):
        factor = 0.05 if i < 2 else 1.0  # slow/kernel, slow/bias; fast/*
        # float32 differences of updated weights: exact to about 1e-7.
        np.testing.assert_allclose(b, factor * a, rtol=1e-3, atol=1e-6)
    assert np.abs(plain[0]).max() > 1e-4
    config = MomentumSGD(0.1, learning_rate_scales={"slow": 0.05}).get_config()
    assert MomentumSGD.from_config(config).learning_rate_scales == {"slow": 0.05}
    with pytest.raises(ValueError, match="learning_rate_scales"):
        MomentumSGD(0.1, learning_rate_scales={"slow": 0.0})
    with pytest.raises(ValueError, match="learning_rate_scales"):
        MomentumSGD(0.1, learning_rate_scales=[("slow", 0.05)])


def test_cifar10_protocol_scales_the_convolutions_of_the_network():
    protocol = MAXOUT_PROTOCOLS["cifar10"]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        protocol.optimizer()
    optimizer = protocol.optimizer(steps_per_epoch=313)
    # The first epoch's rate: one step of the linear decay (pylearn2).
    assert float(optimizer.learning_rate) == pytest.approx(0.17 * (1 - 0.99 / 500))
    model = kg.models.cifar10_conv_maxout(width=0.05)
    scaled = {name for name, _ in protocol.learning_rate_scales}
    names = {layer.name for layer in model.layers}
    assert scaled <= names  # every scaled layer exists in the network
    conv = [v for v in model.trainable_variables if optimizer._scale(v) == 0.05]
    assert {v.path.split("/")[0] for v in conv} == scaled
    assert optimizer._scale(model.get_layer("softmax").kernel) == 1.0


def test_momentum_schedule_values_and_checks():
    schedule = MomentumSchedule(0.5, 0.7, start=1, saturate=250)
    assert schedule.value(1) == pytest.approx(0.5)
    assert schedule.value(125.5) == pytest.approx(0.6)
    assert schedule.value(250) == pytest.approx(0.7)
    assert schedule.value(400) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="saturate"):
        MomentumSchedule(saturate=1)
    with pytest.raises(ValueError, match="final"):
        MomentumSchedule(final=1.5)


def _tiny_model(optimizer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, "softmax")])
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_momentum_schedule_reaches_the_compiled_step():
    x = np.random.default_rng(0).random((20, 3)).astype("float32")
    y = np.arange(20) % 2
    model = _tiny_model(MomentumSGD(0.1, momentum=0.5))
    schedule = MomentumSchedule(0.5, 0.7, start=1, saturate=3)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(
            float(model.optimizer.momentum_variable)
        )
    )
    model.fit(x, y, epochs=4, batch_size=10, verbose=0, callbacks=[schedule, probe])
    np.testing.assert_allclose(seen, [0.5, 0.6, 0.7, 0.7], rtol=1e-6)
    with pytest.raises(ValueError, match="MomentumSGD"):
        _tiny_model("sgd").fit(x, y, epochs=1, verbose=0, callbacks=[schedule])


def test_momentum_sgd_update_is_heavy_ball():
    """v <- mu v - lr g; w <- w + v, with mu read from the variable."""
    w = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = MomentumSGD(0.1, momentum=0.5)
    optimizer.build([w])
    g = np.array([0.3, -0.4], "float32")
    optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
    optimizer.set_momentum(0.9)
    optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
    v1 = -0.1 * g
    v2 = 0.9 * v1 - 0.1 * g
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(w), np.array([1.0, -2.0]) + v1 + v2, rtol=1e-6
    )


def _drive(callback, model, values, key="val_accuracy", start=0):
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values, start):
        callback.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            return epoch
    return None


def test_resumable_early_stopping_keeps_its_state_across_restarts(tmp_path):
    model = _tiny_model("sgd")
    model.stop_training = False
    first = ResumableEarlyStopping(tmp_path, patience=3, restore_best_weights=False)
    assert _drive(first, model, [0.5, 0.7, 0.6, 0.7]) is None  # a tie is no gain
    assert (first.best, first.best_epoch, first.wait) == (0.7, 1, 2)
    assert (tmp_path / "best.keras").exists()
    # A new process: the state and its patience carry over.
    second = ResumableEarlyStopping(tmp_path, patience=3, restore_best_weights=False)
    assert _drive(second, model, [0.65], start=4) == 4
    assert second.best_epoch == 1 and second.stopped_epoch == 4
    state = json.loads((tmp_path / "early_stopping.json").read_text())
    assert state["wait"] == 3
    with pytest.raises(ValueError, match="monitor"):
        ResumableEarlyStopping(
            tmp_path, monitor="val_loss", mode="min"
        ).on_train_begin()


def test_resumable_early_stopping_does_not_count_a_resumed_epoch_twice(tmp_path):
    model = _tiny_model("sgd")
    model.stop_training = False
    callback = ResumableEarlyStopping(tmp_path, patience=5, restore_best_weights=False)
    _drive(callback, model, [0.9, 0.8, 0.8])  # wait 2 after epoch 2
    again = ResumableEarlyStopping(tmp_path, patience=5, restore_best_weights=False)
    _drive(again, model, [0.8], start=2)  # epoch 2 ran again after a crash
    assert again.wait == 2


def test_resumable_early_stopping_keeps_the_best_model_through_a_dying_save(
    tmp_path, monkeypatch
):
    model = _tiny_model("sgd")
    model.stop_training = False
    callback = ResumableEarlyStopping(tmp_path, patience=5, restore_best_weights=False)
    _drive(callback, model, [0.5])
    saved = keras.saving.load_model(tmp_path / "best.keras").get_weights()

    def dying_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:  # as a process killed while writing
            f.write(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", dying_save)
    model.set_weights([w + 1.0 for w in model.get_weights()])
    with pytest.raises(KeyboardInterrupt):
        _drive(callback, model, [0.6], start=1)
    monkeypatch.undo()
    kept = keras.saving.load_model(tmp_path / "best.keras").get_weights()
    for a, b in zip(saved, kept):
        np.testing.assert_array_equal(a, b)


def test_continue_until_matched_stops_at_the_target():
    model = _tiny_model("sgd")
    model.stop_training = False
    callback = ContinueUntilMatched(target=0.3)
    assert _drive(callback, model, [0.5, 0.31, 0.29, 0.1], key="val_loss") == 2
    assert callback.matched_epoch == 2
    with pytest.raises(ValueError, match="val_loss"):
        ContinueUntilMatched(0.3).on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="target"):
        ContinueUntilMatched(float("nan"))


def _dropout_identity():
    """y = dropout(x), rate 0.5: each output is 0 or 2x, with mse to 0 of
    0 or 4 for x = 1 (mean 2); without the noise it is 1."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dropout(0.5, seed=3)])
    model.compile(loss="mse")
    return model


def test_noisy_loss_averages_the_dropout_loss():
    model = _dropout_identity()
    x, y = np.ones((20_000, 1), "float32"), np.zeros((20_000, 1), "float32")
    # Per-example loss 0 or 4 with probability 1/2: std 2, standard error
    # 2 / sqrt(20000) = 0.014.
    assert noisy_loss(model, x, y, batch_size=3000) == pytest.approx(2.0, abs=0.07)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(1.0)
    # A partial last batch counts by its size: 1 example of a possible 4.
    assert noisy_loss(model, x[:1], y[:1], batch_size=4) in (0.0, 4.0)
    with pytest.raises(ValueError, match="batch_size"):
        noisy_loss(model, x, y, batch_size=0)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_noisy_loss_callback_feeds_continue_until_matched():
    model = _dropout_identity()
    x, y = np.ones((2000, 1), "float32"), np.zeros((2000, 1), "float32")
    # Nothing trains (no weights), so the noisy loss stays near 2: a target
    # of 3 matches at the first epoch, while the clean loss (1) would too;
    # a target of 1.5 is met by the clean loss but not by the noisy one.
    for target, epochs in ((3.0, 1), (1.5, 3)):
        history = model.fit(
            x, y, epochs=3, verbose=0, validation_data=(x, y),
            callbacks=[NoisyLoss(x, y), ContinueUntilMatched(target, "val_noisy_loss")],
        )  # fmt: skip
        assert len(history.epoch) == epochs
        assert all(1.8 < v < 2.2 for v in history.history["val_noisy_loss"])


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


def _protocol_data():
    rng = np.random.default_rng(0)
    x = rng.random((60, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    return (x[:40], y[:40]), (x[40:], y[40:])


def _protocol_model():
    inputs = keras.Input((6,))
    h = kg.layers.Maxout(4, 2)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.1)
    protocol = MaxoutProtocol(batch_size=10, learning_rate=0.05, saturate=3)
    model.compile(
        protocol.optimizer(), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model, protocol


def test_train_then_continue_runs_both_stages_and_resumes(tmp_path):
    train, val = _protocol_data()
    model, protocol = _protocol_model()
    protocol = protocol.replace(patience=2, max_epochs=6, continue_max_epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train_then_continue(
            model, train, val, tmp_path, protocol, callbacks=[_Interrupt(1)], verbose=0
        )
    assert not (tmp_path / "protocol.json").exists()
    model, _ = _protocol_model()  # a new process rebuilds the same model
    summary = train_then_continue(model, train, val, tmp_path, protocol, verbose=0)
    epochs = np.loadtxt(
        tmp_path / "stage1" / "history.csv", delimiter=",", skiprows=1, usecols=0
    )
    # Resumed after epoch 1 (0-based): no epoch was lost.
    assert set(epochs.astype(int)) == set(range(summary["stage1_epochs"]))
    assert 1 <= summary["best_epoch"] <= summary["stage1_epochs"] <= 6
    assert 1 <= summary["continue_epochs"] <= 4
    final = keras.saving.load_model(summary["model_path"])
    stage2 = np.loadtxt(
        tmp_path / "stage2" / "history.csv", delimiter=",", skiprows=1, ndmin=2
    )
    # Stage 2 starts from the best epoch and stops on the match (or the cap).
    assert int(stage2[0, 0]) == summary["best_epoch"]
    header = (tmp_path / "stage2" / "history.csv").read_text().split("\n")[0]
    noisy = stage2[:, header.split(",").index("val_noisy_loss")]
    # The match is on the dropout-mode loss (pylearn2's), and only there.
    assert summary["match"] == "noisy"
    assert summary["matched"] == (noisy[-1] <= summary["target"])
    assert all(noisy[:-1] > summary["target"])
    assert isinstance(final.optimizer, MomentumSGD)
    # A finished run returns its summary without training again.
    again = train_then_continue(model, train, val, tmp_path, protocol, verbose=0)
    assert again == summary
    # Stage 1 is kept when only the comparison changes; the old target is
    # not silently reused.
    (tmp_path / "protocol.json").unlink()
    clean = protocol.replace(match="clean")
    with pytest.raises(ValueError, match="match='clean'"):
        train_then_continue(model, train, val, tmp_path, clean, verbose=0)
    # Deleting the target and stage 2 reruns stage 2 alone: stage 1's
    # history gains no epoch.
    rows = (tmp_path / "stage1" / "history.csv").read_text()
    (tmp_path / "stage1" / "target.json").unlink()
    shutil.rmtree(tmp_path / "stage2")
    rerun = train_then_continue(model, train, val, tmp_path, clean, verbose=0)
    assert (tmp_path / "stage1" / "history.csv").read_text() == rows
    assert rerun["match"] == "clean"
    assert rerun["stage1_epochs"] == summary["stage1_epochs"]
    assert rerun["best_epoch"] == summary["best_epoch"]


def test_stage_two_refuses_a_best_model_with_another_regularizer(tmp_path):
    train, val = _protocol_data()
    model, protocol = _protocol_model()
    protocol = protocol.replace(patience=1, max_epochs=2, continue_max_epochs=1)
    train_then_continue(model, train, val, tmp_path, protocol, verbose=0)
    (tmp_path / "protocol.json").unlink()
    shutil.rmtree(tmp_path / "stage2")
    other, _ = _protocol_model()
    other.regularizer = other.regularizer.replace(sigma=0.5)
    with pytest.raises(ValueError, match="saved with the regularizer"):
        train_then_continue(other, train, val, tmp_path, protocol, verbose=0)
    # The run's own model goes on.
    again, _ = _protocol_model()
    summary = train_then_continue(again, train, val, tmp_path, protocol, verbose=0)
    assert summary["continue_epochs"] >= 1


def test_maxout_protocol_refuses_an_unknown_match():
    with pytest.raises(ValueError, match="match='dropout'"):
        MaxoutProtocol(match="dropout")
    with pytest.raises(ValueError, match="stage2_optimizer='new'"):
        MaxoutProtocol(stage2_optimizer="new")


class _StageTwoVelocity(keras.callbacks.Callback):
    """The largest velocity entry at the first update of the second `fit`
    (stage 2's)."""

    def __init__(self):
        super().__init__()
        self.fits, self.velocity = 0, None

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_train_batch_begin(self, batch, logs=None):
        if self.fits == 2 and self.velocity is None:
            self.velocity = max(
                float(np.abs(keras.ops.convert_to_numpy(v)).max())
                for v in self.model.optimizer.momentums
            )


def test_a_fresh_stage_two_starts_from_zero_velocity(tmp_path):
    """pylearn2's `mnist_pi_continued.yaml` starts stage 2 with a new SGD:
    its first update is then `-lr * g`, with no velocity carried over from
    stage 1; by default the velocity goes on."""
    train, val = _protocol_data()
    velocity = {}
    for start in (None, "fresh"):
        keras.utils.set_random_seed(0)
        model, protocol = _protocol_model()
        protocol = protocol.replace(
            patience=1, max_epochs=2, continue_max_epochs=1, stage2_optimizer=start
        )
        probe = _StageTwoVelocity()
        train_then_continue(
            model, train, val, tmp_path / str(start), protocol, callbacks=[probe],
            verbose=0,
        )  # fmt: skip
        velocity[start] = probe.velocity
    assert velocity["fresh"] == 0.0
    assert velocity[None] > 0.0
