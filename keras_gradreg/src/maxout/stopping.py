"""When the maxout papers' training stops: early stopping that survives a
restart, and stage 2's "continue until matched".

pylearn2's `MonitorBased` termination with `MonitorBasedSaveBest` (stage
1), and `MatchChannel` (stage 2) on the objective it monitored: the
dropout cost, noise included (`noisy_loss`, `NoisyLoss`), as Keras
callbacks. They are part of
`keras_gradreg.protocol` (import them from there); this module holds them
so that the protocol's module stays the recipe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer
from keras_gradreg.src.files import atomic_path
from keras_gradreg.src.training import objective
from keras_gradreg.src.training.backend.common import call_model


def _monitored(callback, logs) -> float:
    """`logs[callback.monitor]` as a float, or a ValueError naming the
    callback, the key and the keys the logs have."""
    logs = logs or {}
    if callback.monitor not in logs:
        raise ValueError(
            f"{type(callback).__name__} monitors {callback.monitor!r}, which the "
            f"logs do not have (pass validation_data?). Available: {sorted(logs)}"
        )
    return float(logs[callback.monitor])


def _write_json(path: Path, value) -> None:
    """Writes JSON atomically (a crash leaves the old file or the new one)."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(value, indent=2))


def _save_model(model: keras.Model, path: Path) -> None:
    """Saves `model` atomically, like `_write_json`: a process killed while
    writing leaves the old file, not a half-written one."""
    with atomic_path(path) as partial:
        model.save(partial)


@keras_gradreg_export("keras_gradreg.protocol.noisy_loss")
def noisy_loss(model: keras.Model, x, y, batch_size: int = 1000) -> float:
    """The model's compiled loss on `(x, y)` with its noise on: the mean over
    examples of `L(f(x_i; m_i), y_i)`, one fresh dropout mask `m_i` each
    (`training=True`), the weights unchanged.

    This is the objective pylearn2 monitored for a dropout network
    (`train_objective`, `valid_objective`), which the maxout papers' stage 2
    matched. Without the noise a network fits its training images far
    better than it ever fits new ones, so a deterministic target can be out
    of reach. The estimate's standard error is about `std_i(L_i) /
    sqrt(N)`. Only the data term is counted, not a `GradRegModel`'s
    gradient term, so both sides of the match measure the same thing
    whatever the member. Layers that update state in training mode (batch
    normalization's moving statistics) do so here too; the maxout networks
    have none.

    Args:
        model: a compiled Keras model.
        x: inputs, an array (or structure of arrays) of N examples.
        y: targets.
        batch_size: examples per forward pass (the masks are per example,
            so it changes speed only).

    Returns:
        The mean loss as a Python float.

    Examples:
        >>> import numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5),
        ...                           keras.layers.Dense(2)])
        >>> model.compile(loss="mse")
        >>> noisy_loss(model, np.zeros((4, 3)), np.zeros((4, 2)))
        0.0
    """
    batch_size = check_integer("batch_size", batch_size)
    count = len(keras.tree.flatten(x)[0])
    if count == 0:
        raise ValueError("noisy_loss needs at least one example. Received: 0")
    total = 0.0
    for start in range(0, count, batch_size):
        rows = slice(start, start + batch_size)
        part = keras.tree.map_structure(lambda a, rows=rows: a[rows], x)
        target = keras.tree.map_structure(lambda a, rows=rows: a[rows], y)
        y_pred = call_model(model, part, training=True)
        loss = objective.compiled_loss(model, target, y_pred, None)
        size = len(keras.tree.flatten(part)[0])
        total += float(keras.ops.convert_to_numpy(loss)) * size
    return total / count


@keras_gradreg_export("keras_gradreg.protocol.NoisyLoss")
class NoisyLoss(keras.callbacks.Callback):
    """Adds `logs[name] = noisy_loss(model, x, y)` after every epoch.

    Place it before the callbacks that read the key (`ContinueUntilMatched`,
    `CSVLogger`): Keras hands every callback the same logs in list order.

    Args:
        x: inputs, e.g. the former validation images in stage 2.
        y: their targets.
        name: the log key.
        batch_size: examples per forward pass.
    """

    def __init__(self, x, y, name: str = "val_noisy_loss", batch_size: int = 1000):
        super().__init__()
        self.x, self.y, self.name = x, y, name
        self.batch_size = check_integer("batch_size", batch_size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.name] = noisy_loss(self.model, self.x, self.y, self.batch_size)


@keras_gradreg_export("keras_gradreg.protocol.ResumableEarlyStopping")
class ResumableEarlyStopping(keras.callbacks.Callback):
    """Early stopping that keeps the best model on disk and survives restarts.

    After each epoch it compares `logs[monitor]` with the best value so far;
    an improvement (strictly better by more than `min_delta`) saves the
    whole model (weights and optimizer state) to `directory/best.keras`.
    Training stops once `patience` epochs pass without one. Its state (best
    value and epoch, epochs waited) lives in `directory/early_stopping.json`,
    so with `callbacks.BackupAndRestore` an interrupted `fit` resumes
    with its patience and best model intact, which Keras's `EarlyStopping`
    does not.

    Args:
        directory: folder for `best.keras` and the state file.
        monitor: the log key, e.g. "val_accuracy".
        mode: "max" or "min".
        patience: epochs without improvement before stopping, >= 1.
        min_delta: smallest change that counts as an improvement, >= 0.
        restore_best_weights: load the best weights when training ends.

    Attributes:
        best: the best value seen (None before the first epoch).
        best_epoch: its 0-based epoch (-1 before the first epoch).
        best_logs: the logs of that epoch.
        stopped_epoch: the epoch training stopped at, or -1.
    """

    def __init__(
        self,
        directory,
        monitor: str = "val_accuracy",
        mode: str = "max",
        patience: int = 100,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(
                f"Argument `mode` must be 'max' or 'min'. Received: mode={mode!r}"
            )
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(
                f"Argument `min_delta` must be a number >= 0. Received: "
                f"min_delta={min_delta!r}"
            )
        self.directory = Path(directory)
        self.monitor, self.mode = monitor, mode
        self.patience = check_integer("patience", patience)
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.best, self.best_epoch, self.best_logs = None, -1, {}
        self.wait, self.last_epoch, self.stopped_epoch = 0, -1, -1

    @property
    def best_path(self) -> Path:
        return self.directory / "best.keras"

    @property
    def state_path(self) -> Path:
        return self.directory / "early_stopping.json"

    def finished(self, max_epochs: int) -> bool:
        """Whether the state on disk says training ended, by patience or
        after `max_epochs` (the fit's backup is gone then, so fitting again
        would start from scratch)."""
        if not self.state_path.exists():
            return False
        state = json.loads(self.state_path.read_text())
        return state["wait"] >= self.patience or state["last_epoch"] + 1 >= max_epochs

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state["monitor"] != self.monitor or state["mode"] != self.mode:
                raise ValueError(
                    f"{self.state_path} records monitor={state['monitor']!r}, "
                    f"mode={state['mode']!r}; resume with the same or use another "
                    f"directory. Received: monitor={self.monitor!r}, mode={self.mode!r}"
                )
            for name in ("best", "best_epoch", "best_logs", "wait", "last_epoch"):
                setattr(self, name, state[name])

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(self, logs)
        if not math.isfinite(value):
            raise ValueError(
                f"ResumableEarlyStopping received a non-finite {self.monitor} "
                f"({value}) at epoch {epoch + 1}."
            )
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_logs = {k: float(v) for k, v in logs.items()}
            _save_model(self.model, self.best_path)
        elif epoch > self.last_epoch:  # a resumed epoch is not counted twice
            self.wait += 1
        self.last_epoch = max(self.last_epoch, epoch)
        _write_json(
            self.state_path,
            {
                "monitor": self.monitor,
                "mode": self.mode,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "best_logs": self.best_logs,
                "wait": self.wait,
                "last_epoch": self.last_epoch,
            },
        )
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_path.exists():
            self.model.load_weights(self.best_path)


@keras_gradreg_export("keras_gradreg.protocol.ContinueUntilMatched")
class ContinueUntilMatched(keras.callbacks.Callback):
    """Stops training once `logs[monitor]` falls to `target` (pylearn2's
    `MatchChannel`).

    The second stage of the maxout protocol continues on training +
    validation data from the best model until the loss on the former
    validation images is no larger than the training loss recorded at the
    best epoch: the model has then fitted the extra data as well as it had
    fitted the rest. pylearn2 compared the losses with dropout on
    (`NoisyLoss` puts that in the logs).

    Args:
        target: the value to reach.
        monitor: the log key (default "val_loss"; "val_noisy_loss" with
            `NoisyLoss`).

    Attributes:
        matched_epoch: the 0-based epoch at which it stopped, or -1.
    """

    def __init__(self, target: float, monitor: str = "val_loss"):
        super().__init__()
        if not (isinstance(target, (int, float)) and math.isfinite(target)):
            raise ValueError(
                f"Argument `target` must be a finite number. Received: target={target!r}"
            )
        self.target, self.monitor = float(target), monitor
        self.matched_epoch = -1

    def on_epoch_end(self, epoch, logs=None):
        if _monitored(self, logs) <= self.target:
            self.matched_epoch = epoch
            self.model.stop_training = True
