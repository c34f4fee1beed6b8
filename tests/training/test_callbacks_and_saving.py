"""Standard Keras callbacks in `fit`, and `.keras` save/load round trips."""

import csv
import warnings

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests.conftest import BACKEND
from tests.helpers import LABELLED_FORMS, compile_
from tests.training.test_models import Subclassed, mlp


@keras.saving.register_keras_serializable(package="keras_gradreg_tests")
class SerializableNet(Subclassed):
    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.mark.parametrize("form", ["penalty", "perturb"])
def test_functional_save_load_round_trip(tmp_path, classification_data, form):
    x, y = classification_data
    model = compile_(mlp(norm=3.0, sigma=0.2, form=form, alpha=0.1, input_range=(0, 1)))
    model.fit(x, y, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert isinstance(loaded, kg.GradRegModel)
    assert loaded.regularizer == model.regularizer
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    # The loaded model keeps training with the same objective.
    history = loaded.fit(x, y, batch_size=16, verbose=0).history
    assert history["adv_loss"][0] > history["clean_loss"][0]


def test_subclassed_save_load_round_trip(tmp_path, classification_data):
    x, y = classification_data
    model = compile_(
        SerializableNet(units=5, norm="l1", sigma=0.3, form="finite_difference")
    )
    model.fit(x, y, batch_size=16, verbose=0)
    model.regularizer = model.regularizer.replace(
        sigma=0.05
    )  # changed after construction
    model.save(tmp_path / "sub.keras")
    loaded = keras.saving.load_model(tmp_path / "sub.keras")
    assert type(loaded) is SerializableNet and loaded.units == 5
    assert loaded.regularizer == kg.GradientRegularizer(
        norm="l1", sigma=0.05, form="finite_difference"
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


def test_get_config_round_trip_of_the_regularizer():
    reg = kg.GradientRegularizer(
        norm=1.5,
        sigma=0.2,
        form="perturb",
        alpha=0.5,
        input_range=(-1, 1),
        inputs_to_regularize=["a"],
    )
    config = keras.saving.serialize_keras_object(reg)
    assert keras.saving.deserialize_keras_object(config) == reg


def test_early_stopping_checkpoint_and_csv_logger(tmp_path, classification_data):
    x, y = classification_data
    model = compile_(mlp(norm="linf", sigma=0.05), lr=0.05)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="grad_norm", patience=0, mode="max"),
        keras.callbacks.ModelCheckpoint(
            tmp_path / "best.keras", monitor="loss", save_best_only=True
        ),
        keras.callbacks.CSVLogger(tmp_path / "log.csv"),
    ]
    history = model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=8,
        batch_size=16,
        verbose=0,
        callbacks=callbacks,
    )
    epochs = len(history.history["loss"])
    assert (
        1 <= epochs < 8
    )  # the gradient norm shrinks, so EarlyStopping on its maximum stops early
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == epochs
    assert {
        "loss",
        "clean_loss",
        "adv_loss",
        "grad_norm",
        "val_loss",
        "val_accuracy",
    } <= set(rows[0])
    assert "val_grad_norm" not in rows[0]  # evaluate sees clean inputs only
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert best.regularizer == model.regularizer


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_from_the_saved_epoch(tmp_path, classification_data):
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.1, form="perturb"))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            x, y, epochs=4, batch_size=16, verbose=0, callbacks=[backup, _Interrupt(2)]
        )
    saved = model.get_weights()
    resumed = compile_(mlp(norm="l2", sigma=0.1, form="perturb"))
    history = resumed.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[backup])
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    assert history.epoch == [2, 3]
    assert not np.allclose(saved[0], resumed.get_weights()[0])  # it trained on


@pytest.mark.parametrize(
    "form, share_noise",
    [
        ("perturb", False),
        ("multistep", False),
        ("penalty", True),
        ("finite_difference", True),
    ],
)
def test_a_config_saved_before_share_noise_keeps_its_fresh_draws(form, share_noise):
    # Models saved before `share_noise` existed drew fresh noise in every
    # pass: loaded without the key they keep doing so where the form allows.
    model = mlp(norm="l2", sigma=0.1, form=form)
    # 0.1.0's flat layout: the form by name, its arguments beside it.
    config = {**model.get_config(), "form": form, "steps": 7, "fd_step": 0.01}
    loaded = kg.GradRegModel.from_config(config)
    if share_noise:  # forms that always share (or make one pass)
        assert loaded.regularizer == model.regularizer
    else:
        assert loaded.regularizer.share_noise is False
        assert loaded.regularizer.replace(share_noise=True) == model.regularizer
    # A config that names it is read as written.
    explicit = kg.GradRegModel.from_config(model.get_config())
    assert explicit.regularizer == model.regularizer


def _dropout_run(backup_dir, callbacks=(), rates=(0.2, 0.5)):
    """Three epochs of a dropout network with momentum, shuffled; the
    process's seed set afresh, as a restarted script does."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dropout(rates[0])(inputs) if rates else inputs
    h = kg.layers.Maxout(4, 2)(h)
    h = keras.layers.Dropout(rates[1])(h) if rates else h
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = kg.GradRegModel(
        inputs, outputs, norm="l2", sigma=0.1, form="multistep", steps=2
    )
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.5), "sparse_categorical_crossentropy"
    )
    rng = np.random.default_rng(0)
    x = rng.random((60, 6)).astype("float32")
    y = rng.integers(0, 3, 60)
    backup = kg.callbacks.BackupAndRestore(str(backup_dir))
    model.fit(x, y, epochs=3, batch_size=10, verbose=0, callbacks=[backup, *callbacks])
    return model.get_weights()


def test_backup_and_restore_resumes_the_random_state_exactly(tmp_path):
    straight = _dropout_run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path / "backup", [_Interrupt(2)])
    resumed = _dropout_run(tmp_path / "backup")
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    # Without the random state (Keras's own callback) the resumed epoch
    # replays the first epoch's masks, random starts and batch order.
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path / "keras", [_Interrupt(2)])
    (tmp_path / "keras" / "random_state.npz").unlink()
    replayed = _dropout_run(tmp_path / "keras")
    assert not all(np.array_equal(a, b) for a, b in zip(straight, replayed))


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begun = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)


def test_backup_and_restore_resumes_from_the_epoch_before_a_torn_write(tmp_path):
    # A process killed while Keras wrote the weights leaves them unreadable:
    # the run resumes from the previous epoch's backup, with that epoch's
    # random state, and trains as an uninterrupted one.
    straight = _dropout_run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path / "backup", [_Interrupt(2)])
    (tmp_path / "backup" / "latest.weights.h5").write_bytes(b"half-written")
    epochs = _Epochs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _dropout_run(tmp_path / "backup", [epochs])
    assert not [w for w in caught if "resumes without it" in str(w.message)]
    assert epochs.begun == [1, 2]
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


def test_backup_and_restore_names_a_backup_it_cannot_read(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path, [_Interrupt(2)])
    for path in tmp_path.glob("*weights*"):  # the latest and the previous
        path.write_bytes(b"half-written")
    with pytest.raises(ValueError, match=f"cannot be read.*{tmp_path.name}"):
        _dropout_run(tmp_path)


def test_backup_and_restore_skips_a_random_state_of_another_epoch(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path, [_Interrupt(2)])
    saved = dict(np.load(tmp_path / "random_state.npz"))
    saved["epoch"] = np.asarray(1)  # as if the process died between writes
    np.savez(tmp_path / "random_state.npz", **saved)
    with pytest.warns(UserWarning, match="resumes at epoch 2"):
        _dropout_run(tmp_path)


def test_backup_and_restore_refuses_another_models_backup(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path, [_Interrupt(2)])
    # The same weights without the dropout layers: Keras loads the weights,
    # the random state does not fit.
    with pytest.raises(ValueError, match="another model"):
        _dropout_run(tmp_path, rates=())


@pytest.mark.skipif(BACKEND != "torch", reason="torch's global generators")
def test_backup_and_restore_reads_a_backup_of_the_cpu_generator_only(tmp_path):
    # Early 0.1.0 builds of the torch backend saved its CPU generator as
    # "global"; such a backup still resumes exactly.
    straight = _dropout_run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="interrupted"):
        _dropout_run(tmp_path / "backup", [_Interrupt(2)])
    saved = dict(np.load(tmp_path / "backup" / "random_state.npz"))
    assert sorted(k for k in saved if k.startswith("global")) == ["global_cpu"]
    saved["global"] = saved.pop("global_cpu")
    np.savez(tmp_path / "backup" / "random_state.npz", **saved)
    resumed = _dropout_run(tmp_path / "backup")
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(BACKEND != "torch", reason="torch's global generators")
def test_global_random_state_round_trips_and_refuses_a_missing_device():
    import torch

    from keras_gradreg.src.training import backend

    states = backend.global_random_state()
    first = torch.rand(5)
    backend.set_global_random_state(states)
    np.testing.assert_array_equal(first.numpy(), torch.rand(5).numpy())
    absent = f"cuda{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=absent):
        backend.set_global_random_state({**states, absent: states["cpu"]})


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorBoard event files need TF")
def test_tensorboard_logs_the_family_terms(tmp_path, classification_data):
    import tensorflow as tf

    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.1))
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        verbose=0,
        callbacks=[keras.callbacks.TensorBoard(tmp_path)],
    )
    tags = set()
    for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert {
        "epoch_loss",
        "epoch_grad_norm",
        "epoch_adv_loss",
        "epoch_clean_loss",
    } <= tags


def test_epoch_timer_records_one_time_per_epoch(classification_data):
    x, y = classification_data
    timer = kg.callbacks.EpochTimer()
    assert np.isnan(timer.median)
    compile_(mlp(sigma=0.1)).fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[timer]
    )
    assert len(timer.times) == 3 and all(t > 0 for t in timer.times)
    assert min(timer.times) <= timer.median <= max(timer.times)


@pytest.mark.parametrize("form", LABELLED_FORMS)
def test_sigma_schedule_sets_the_sigma_each_epoch_trains_with(form):
    """Assigning model.regularizer inside fit works; the trained sigma per
    epoch is the schedule's (one batch per epoch: for the penalty form
    adv_loss - clean_loss is exactly sigma * grad_norm)."""
    rng = np.random.default_rng(0)
    x = rng.random((16, 4)).astype("float32")
    y = rng.integers(0, 3, 16)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.0, form=form)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    schedule = kg.callbacks.SigmaSchedule.linear(0.4, epochs=4, initial=0.0)
    logs = model.fit(
        x, y, batch_size=16, epochs=5, verbose=0, callbacks=[schedule]
    ).history
    expected = [schedule.value(e) for e in range(5)]
    np.testing.assert_allclose(logs["sigma"], expected, rtol=1e-6)
    assert model.regularizer.sigma == pytest.approx(0.4)
    assert logs["adv_loss"][0] == pytest.approx(logs["clean_loss"][0])  # sigma 0
    if form == "penalty":
        gap = np.array(logs["adv_loss"]) - np.array(logs["clean_loss"])
        np.testing.assert_allclose(
            gap, np.array(expected) * logs["grad_norm"], rtol=1e-4
        )
    else:
        assert all(a > c for a, c in zip(logs["adv_loss"][1:], logs["clean_loss"][1:]))


def test_changing_the_form_inside_fit_rebuilds_the_step():
    x = np.random.default_rng(1).random((8, 4)).astype("float32")
    y = np.arange(8) % 3
    inputs = keras.Input((4,))
    model = kg.GradRegModel(inputs, keras.layers.Dense(3, "softmax")(inputs), sigma=0.1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    switch = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (
            setattr(model, "regularizer", model.regularizer.replace(form="perturb"))
            if epoch == 1
            else None
        )
    )
    logs = model.fit(x, y, epochs=2, verbose=0, callbacks=[switch]).history
    assert len(logs["loss"]) == 2 and model.regularizer.form.name == "perturb"


def test_sigma_schedule_checks():
    with pytest.raises(ValueError, match="schedule"):
        kg.callbacks.SigmaSchedule(0.3)
    with pytest.raises(ValueError, match="sigma=-1"):
        kg.callbacks.SigmaSchedule(lambda epoch: -1.0).value(0)
    cosine = kg.callbacks.SigmaSchedule.cosine(0.2, epochs=4)
    assert cosine.value(0) == pytest.approx(0.0) and cosine.value(4) == pytest.approx(
        0.2
    )
    keras_schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.3])
    assert kg.callbacks.SigmaSchedule(keras_schedule).value(3) == pytest.approx(0.3)
