"""Helpers shared by the backend train steps (no framework imports)."""

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.training import objective


def check_distribution():
    """Nothing to refuse on TensorFlow and JAX: `tf.distribute` strategies
    and `keras.distribution` shard the global batch, and the train step's
    per-example terms are averaged over it (see docs/guides/distributed.md)."""


def train_function(model, function):
    """The train function Keras built, unchanged (see the torch backend's)."""
    del model
    return function


def global_random_state():
    """None: TensorFlow's and JAX's Keras layers draw from their own
    `SeedGenerator`s only (see the torch backend's, a dict of NumPy arrays
    by device name)."""
    return None


def set_global_random_state(state):
    """Nothing to set back (see `global_random_state`)."""
    del state


def call_model(model, x, training=True):
    """`model(x, training=...)`, omitting `training` when `call` lacks it."""
    if _keras_compat.call_has_training_arg(model):
        return model(x, training=training)
    return model(x)


def train_logs(model, terms, total, x, y, y_pred, sample_weight):
    """Adds one batch to the epoch means shown in `History` (weighted by the
    batch size, as Keras does for `loss`) and returns the step's logs: the
    compiled metrics on the outputs `y_pred` (the clean ones, or the
    perturbed pass's when the step takes no clean pass) plus the family's
    terms (without `clean_loss` when there is none)."""
    size = objective.batch_size(x)
    _keras_compat.loss_tracker(model).update_state(total, sample_weight=size)
    values = (terms.clean_loss, terms.adv_loss, terms.grad_norm)
    trackers = [
        (tracker, value)
        for tracker, value in zip(model.family_trackers, values)
        if value is not None
    ]
    for tracker, value in trackers:
        tracker.update_state(value, sample_weight=size)
    _keras_compat.track_output_losses(model, y, y_pred, sample_weight)
    logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    logs.update({tracker.name: tracker.result() for tracker, _ in trackers})
    logs[model.sigma_metric.name] = model.sigma_metric.result()
    return logs


def multi_worker_logs(model, logs):
    """`logs` unchanged (the TensorFlow backend adapts them to Keras's
    multi-worker reduction)."""
    del model
    return logs


def first_local_batch(model, iterator):
    """None: only the TensorFlow trainer builds from a distributed batch."""
    del model, iterator
