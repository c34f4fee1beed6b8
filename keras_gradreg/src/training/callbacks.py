"""Keras callbacks for training and reporting."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
import warnings

import keras
import numpy as np

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer
from keras_gradreg.src.files import atomic_path
from keras_gradreg.src.training import backend as _backend


@keras_gradreg_export("keras_gradreg.callbacks.EpochTimer")
class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every training epoch, in seconds.

    Examples:
        >>> timer = EpochTimer()
        >>> # model.fit(x, y, epochs=3, callbacks=[timer]); timer.median
    """

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    @property
    def median(self) -> float:
        """The median epoch time, or NaN before the first epoch ends."""
        return statistics.median(self.times) if self.times else float("nan")


def _saved_epoch(path: str) -> int:
    """The epoch before which the random state in `path` was saved."""
    with np.load(path) as saved:
        return int(saved["epoch"])


@keras_gradreg_export("keras_gradreg.callbacks.BackupAndRestore")
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, restoring the random state as well.

    Keras's callback backs up the weights, the optimizer and the epoch
    after every epoch, but not the random state. A restarted process that
    sets its seed again then draws every dropout mask it drew from the
    first epoch on, and `fit(shuffle=True)` on NumPy arrays repeats the
    first epoch's batch order: the resumed epochs replay the first ones'
    batches and masks. This callback also backs up, with each epoch, the
    states of the model's `SeedGenerator`s (dropout and noise layers, the
    multistep form's random starts) and of the global generators that
    order the batches and draw unseeded masks (NumPy's; torch's, on the
    CPU and every CUDA device), and sets them back when the resumed epoch
    begins (a random state saved for another epoch is left out, with a
    warning). A resumed run then trains
    exactly as an uninterrupted one, on all three backends (tested with
    `fit` on NumPy arrays). A backup holding a CUDA generator resumes only
    where that device exists. A `tf.data.Dataset` of your own shuffles with
    its own seeds, which this callback does not see.

    Keras writes the weights in place, so a process killed while writing
    them (at a job's time limit, say) leaves a backup no resume can read.
    Here the previous epoch's backup is kept by default
    (`double_checkpoint=True`, Keras's own fallback): such a run resumes
    from the epoch before, with that epoch's random state, and trains as
    an uninterrupted run would. A backup that cannot be read at all raises
    a `ValueError` that names the folder.

    Args:
        backup_dir: the folder of the backup, as in Keras.
        double_checkpoint: keep the previous epoch's backup too (Keras's
            default is False).
        delete_checkpoint: delete the backup when training ends, as in
            Keras.

    Examples:
        >>> backup = BackupAndRestore("/tmp/run/backup")
        >>> # model.fit(x, y, epochs=100, callbacks=[backup]); a rerun resumes
    """

    def __init__(self, backup_dir, double_checkpoint=True, delete_checkpoint=True):
        super().__init__(
            backup_dir,
            save_freq="epoch",
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self._random_state_path = os.path.join(backup_dir, "random_state.npz")
        self._prev_random_state_path = os.path.join(backup_dir, "random_state.prev.npz")

    def _seed_states(self):
        model = self.model
        variables = model.non_trainable_variables
        states = [variables[i] for i in _keras_compat.layer_seed_positions(model)]
        seed = getattr(model, "perturbation_seed", None)
        return states + ([seed.state] if seed is not None else [])

    def on_train_begin(self, logs=None):
        try:
            # Keras falls back on the previous epoch's backup by itself.
            super().on_train_begin(logs)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(
                f"The backup in {self.backup_dir} cannot be read ({error}): "
                "was the process that wrote it killed while writing? Delete the "
                "folder to start this training afresh. "
                f"Received: backup_dir={self.backup_dir!r}"
            ) from error
        # Set back when the resumed epoch begins, once its number is known.
        self._restore_pending = os.path.exists(self._random_state_path)

    def on_epoch_begin(self, epoch, logs=None):
        if not getattr(self, "_restore_pending", False):
            return  # a fresh run, or a backup made by Keras's callback
        self._restore_pending = False
        # The latest random state, or the previous one where Keras resumed
        # from the previous epoch's backup.
        paths = (self._random_state_path, self._prev_random_state_path)
        path = next(
            (p for p in paths if os.path.exists(p) and _saved_epoch(p) == epoch), None
        )
        if path is None:
            warnings.warn(
                f"{self._random_state_path} holds the random state before "
                f"epoch {_saved_epoch(self._random_state_path)}, and training "
                f"resumes at epoch {epoch} (interrupted between two writes of "
                "the backup?): this run resumes without it, drawing the first "
                "epochs' dropout masks and batch order again.",
                stacklevel=2,
            )
            return
        with np.load(path) as saved:
            states = self._seed_states()
            if len(states) != int(saved["seed_count"]):
                raise ValueError(
                    f"The backup in {self.backup_dir} holds "
                    f"{int(saved['seed_count'])} random generator states and "
                    f"this model has {len(states)}: it was made for another "
                    "model. Delete the folder to start afresh. Received: "
                    f"backup_dir={self.backup_dir!r}"
                )
            for i, state in enumerate(states):
                state.assign(saved[f"seed_{i}"])
            np.random.set_state(
                (str(saved["numpy_kind"]), saved["numpy_keys"],
                 int(saved["numpy_pos"]), int(saved["numpy_has_gauss"]),
                 float(saved["numpy_gauss"]))
            )  # fmt: skip
            generators = {
                key.removeprefix("global_"): saved[key]
                for key in saved.files
                if key.startswith("global_")
            }
            if "global" in saved:  # written by early 0.1.0 builds: the CPU's only
                generators["cpu"] = saved["global"]
            if generators:
                _backend.set_global_random_state(generators)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        states = self._seed_states()
        arrays = {
            "epoch": np.asarray(epoch + 1), "seed_count": np.asarray(len(states)),
            **{f"seed_{i}": keras.ops.convert_to_numpy(s) for i, s in enumerate(states)},
            "numpy_kind": np.asarray(kind), "numpy_keys": keys,
            "numpy_pos": np.asarray(pos), "numpy_has_gauss": np.asarray(has_gauss),
            "numpy_gauss": np.asarray(gauss),
        }  # fmt: skip
        generators = _backend.global_random_state() or {}
        arrays.update({f"global_{k}": v for k, v in generators.items()})
        # Each file is written beside its place and renamed over it: a
        # process killed while writing leaves the old file, not half a new.
        if self.double_checkpoint and os.path.exists(self._random_state_path):
            with atomic_path(self._prev_random_state_path) as partial:
                shutil.copyfile(self._random_state_path, partial)
        with atomic_path(self._random_state_path) as partial:
            np.savez(partial, **arrays)


@keras_gradreg_export("keras_gradreg.callbacks.SigmaSchedule")
class SigmaSchedule(keras.callbacks.Callback):
    """Sets a GradRegModel's sigma at the start of every epoch.

    Warming sigma up from a small value is standard practice in adversarial
    training. The compiled train step reads sigma from a variable, so a new
    value takes effect at once with no retrace (a change between 0 and a
    positive sigma retraces once: sigma = 0 runs the plain step). The
    value used in each epoch is logged as "sigma".

    Args:
        schedule: `epoch -> sigma` (0-based epoch): a Python callable, or any
            `keras.optimizers.schedules.LearningRateSchedule` (called with
            the epoch), e.g. `CosineDecay`, `PiecewiseConstantDecay`.
            `SigmaSchedule.linear` and `SigmaSchedule.cosine` build ramps.

    Examples:
        >>> warmup = SigmaSchedule.linear(0.3, epochs=5)
        >>> [round(warmup.value(e), 2) for e in range(7)]
        [0.06, 0.12, 0.18, 0.24, 0.3, 0.3, 0.3]
    """

    def __init__(self, schedule):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                "Argument `schedule` must be a callable `epoch -> sigma` or a "
                f"Keras LearningRateSchedule. Received: schedule={schedule!r}"
            )
        self.schedule = schedule

    @classmethod
    def linear(cls, final: float, epochs: int, initial: float | None = None):
        """Ramps linearly to `final` over `epochs` epochs, then holds it.
        The first epoch uses `initial` (default `final / epochs`)."""
        check_integer("epochs", epochs)
        start = final / epochs if initial is None else initial
        if epochs == 1:
            return cls(lambda epoch: final)
        return cls(
            lambda epoch: (
                start + (final - start) * min(epoch, epochs - 1) / (epochs - 1)
            )
        )

    @classmethod
    def cosine(cls, final: float, epochs: int, initial: float = 0.0):
        """Rises from `initial` to `final` along a half cosine over `epochs`
        epochs, then holds it."""
        check_integer("epochs", epochs)

        def value(epoch):
            fraction = min(epoch / epochs, 1.0)
            return final + (initial - final) * 0.5 * (1.0 + np.cos(np.pi * fraction))

        return cls(value)

    def value(self, epoch: int) -> float:
        """The sigma of 0-based `epoch`."""
        sigma = self.schedule(epoch)
        sigma = float(keras.ops.convert_to_numpy(sigma))
        if not np.isfinite(sigma) or sigma < 0:
            raise ValueError(
                f"SigmaSchedule produced sigma={sigma!r} for epoch {epoch}; sigma "
                "must be a finite number >= 0."
            )
        return sigma

    def on_epoch_begin(self, epoch, logs=None):
        regularizer = getattr(self.model, "regularizer", None)
        if regularizer is None:
            raise ValueError(
                "SigmaSchedule sets the sigma of a keras_gradreg.GradRegModel. "
                f"Received: a {type(self.model).__name__}"
            )
        self.model.regularizer = regularizer.replace(sigma=self.value(epoch))
