"""The maxout papers' training protocol as reusable Keras pieces.

Goodfellow et al. (2013) trained every maxout network in two stages
(pylearn2's `scripts/papers/maxout/*.yaml`):

1. SGD with momentum on the training split, the learning rate divided by a
   constant at every update (`FlooredExponentialDecay`) and the momentum
   ramped linearly over the first epochs (`MomentumSchedule`); early
   stopping on the validation misclassification with a long patience,
   keeping the best model (`ResumableEarlyStopping`).
2. From the best model, training continues on training + validation data
   until the objective on the former validation images falls to the
   training objective recorded at the best epoch (`ContinueUntilMatched`),
   both with dropout on (`NoisyLoss`), as pylearn2 monitored them.

`train_then_continue` runs both stages, each checkpointed every epoch so
that an interrupted run resumes where it stopped, and `MAXOUT_PROTOCOLS`
holds the papers' settings per dataset.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer
from keras_gradreg.src.maxout.optimizers import (
    FlooredExponentialDecay,
    LinearDecay,
    MomentumSGD,
)
from keras_gradreg.src.maxout.stopping import (
    ContinueUntilMatched,
    NoisyLoss,
    ResumableEarlyStopping,
    _save_model,
    _write_json,
    noisy_loss,
)
from keras_gradreg.src.training.callbacks import BackupAndRestore

#: Stage 2's comparison: with dropout on (pylearn2's) or off.
MATCHES = ("noisy", "clean")
#: How stage 2's optimizer starts: None carries stage 1's best state over
#: (velocity included); "fresh" zeroes the velocity, as pylearn2's
#: `mnist_pi_continued.yaml` starts a new SGD.
STAGE2_OPTIMIZERS = (None, "fresh")


@keras_gradreg_export("keras_gradreg.protocol.MomentumSchedule")
class MomentumSchedule(keras.callbacks.Callback):
    """Ramps a `MomentumSGD`'s momentum linearly over epochs.

    At (1-based) epoch `e` the momentum is
    `initial + (final - initial) * clip((e - start) / (saturate - start), 0, 1)`,
    pylearn2's `MomentumAdjustor`; the maxout papers use 0.5 -> 0.7 from
    epoch 1 to 250.

    Args:
        initial: momentum up to epoch `start`, in (0, 1).
        final: momentum from epoch `saturate` on, in (0, 1).
        start: the epoch the ramp starts from, >= 1.
        saturate: the epoch it reaches `final`, > `start`.

    Examples:
        >>> MomentumSchedule(0.5, 0.7, start=1, saturate=250).value(250)
        0.7
    """

    def __init__(
        self,
        initial: float = 0.5,
        final: float = 0.7,
        start: int = 1,
        saturate: int = 250,
    ):
        super().__init__()
        for name, value in (("initial", initial), ("final", final)):
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and 0.0 < value < 1.0
            ):
                raise ValueError(
                    f"Argument `{name}` must be a momentum in (0, 1). "
                    f"Received: {name}={value!r}"
                )
        self.start = check_integer("start", start)
        self.saturate = check_integer("saturate", saturate, minimum=self.start + 1)
        self.initial, self.final = float(initial), float(final)

    def value(self, epoch: int) -> float:
        """The momentum of 1-based `epoch`."""
        fraction = (epoch - self.start) / (self.saturate - self.start)
        fraction = min(max(fraction, 0.0), 1.0)
        return self.initial + (self.final - self.initial) * fraction

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, MomentumSGD):
            raise ValueError(
                "MomentumSchedule needs a `keras_gradreg.optimizers.MomentumSGD`: "
                "other optimizers compile their momentum in as a constant. "
                f"Received: optimizer={optimizer!r}"
            )
        optimizer.set_momentum(self.value(epoch + 1))


@keras_gradreg_export("keras_gradreg.protocol.MaxoutProtocol")
@dataclasses.dataclass(frozen=True)
class MaxoutProtocol:
    """One of the maxout papers' training settings (see `MAXOUT_PROTOCOLS`).

    Attributes:
        batch_size: examples per update.
        learning_rate: the initial SGD learning rate.
        decay_factor: the per-update learning-rate divisor.
        min_learning_rate: the learning-rate floor.
        initial_momentum, final_momentum, saturate: the momentum ramp.
        patience: early-stopping patience in epochs (stage 1).
        max_epochs: the most epochs of stage 1.
        continue_max_epochs: the most epochs of stage 2.
        linear_decay: `(start, saturate, factor)` for pylearn2's
            `LinearDecayOverEpoch` (`optimizers.LinearDecay`) instead of the
            per-update exponential decay, or None.
        learning_rate_scales: `(layer name, factor)` pairs, pylearn2's
            `W_lr_scale`/`b_lr_scale` (`MomentumSGD(learning_rate_scales=)`).
        retrain_epochs: CIFAR-10's second model: trained from scratch on
            train + validation data for this many epochs
            (`cifar10_no_aug.yaml`) rather than continued until matched;
            None for the MNIST protocols.
        match: how stage 2 compares the objectives: "noisy" (pylearn2's
            `MatchChannel` on the dropout cost: `noisy_loss` on both sides)
            or "clean" (Keras's `evaluate`, dropout off; the target is then
            the far smaller loss of a network on its own training images,
            which the new images may never reach).
        stage2_optimizer: how stage 2's optimizer starts: None (the
            default) goes on with the best model's optimizer state;
            "fresh" starts from zero velocity, as pylearn2's
            `mnist_pi_continued.yaml` starts a new SGD. In both, stage 2
            keeps the momentum of the best epoch fixed and the learning
            rate goes on decaying per update from its value there (the
            values `mnist_pi_continued.yaml` writes in by hand).
    """

    batch_size: int = 100
    learning_rate: float = 0.1
    decay_factor: float = 1.000004
    min_learning_rate: float = 1e-6
    initial_momentum: float = 0.5
    final_momentum: float = 0.7
    saturate: int = 250
    patience: int = 100
    max_epochs: int = 1000
    continue_max_epochs: int = 500
    linear_decay: tuple | None = None
    learning_rate_scales: tuple = ()
    retrain_epochs: int | None = None
    match: str = "noisy"
    stage2_optimizer: str | None = None

    def __post_init__(self):
        if self.match not in MATCHES:
            raise ValueError(
                f"Argument `match` must be one of {MATCHES}. Received: "
                f"match={self.match!r}"
            )
        if self.stage2_optimizer not in STAGE2_OPTIMIZERS:
            raise ValueError(
                f"Argument `stage2_optimizer` must be one of {STAGE2_OPTIMIZERS}. "
                f"Received: stage2_optimizer={self.stage2_optimizer!r}"
            )

    def optimizer(self, steps_per_epoch: int | None = None) -> MomentumSGD:
        """A fresh `MomentumSGD` on the protocol's learning-rate schedule.

        Args:
            steps_per_epoch: updates per epoch; needed by `linear_decay`,
                whose rate changes by epoch.

        Raises:
            ValueError: if the protocol decays by epoch and
                `steps_per_epoch` is missing.
        """
        if self.linear_decay is None:
            schedule = FlooredExponentialDecay(
                self.learning_rate, self.decay_factor, self.min_learning_rate
            )
        elif steps_per_epoch is None:
            raise ValueError(
                "This protocol decays its learning rate by epoch: pass "
                "`steps_per_epoch` (ceil(training examples / batch_size)). "
                "Received: steps_per_epoch=None"
            )
        else:
            start, saturate, factor = self.linear_decay
            schedule = LinearDecay(
                self.learning_rate, steps_per_epoch, start, saturate, factor
            )
        return MomentumSGD(
            schedule,
            momentum=self.initial_momentum,
            learning_rate_scales=dict(self.learning_rate_scales) or None,
        )

    def momentum_schedule(self) -> MomentumSchedule:
        return MomentumSchedule(
            self.initial_momentum, self.final_momentum, saturate=self.saturate
        )

    def replace(self, **changes) -> MaxoutProtocol:
        return dataclasses.replace(self, **changes)


#: The maxout papers' settings: pylearn2's `mnist_pi.yaml` (permutation-
#: invariant MNIST), `mnist.yaml` (convolutional MNIST) and
#: `cifar10_no_aug_valid.yaml` / `cifar10_no_aug.yaml` (CIFAR-10 without
#: augmentation: lr 0.17 decayed linearly to 1% over 500 epochs, 0.05 of it
#: on the convolutions of `models.cifar10_conv_maxout`, momentum 0.5 -> 0.6
#: by epoch 250; the 50K model trained from scratch for 785 epochs).
MAXOUT_PROTOCOLS = {
    "mnist_pi": MaxoutProtocol(),
    "mnist_conv": MaxoutProtocol(
        batch_size=128, learning_rate=0.05, decay_factor=1.00004
    ),
    "cifar10": MaxoutProtocol(
        batch_size=128,
        learning_rate=0.17,
        final_momentum=0.6,
        linear_decay=(1, 500, 0.01),
        learning_rate_scales=tuple((f"conv_maxout_{i}", 0.05) for i in (1, 2, 3)),
        retrain_epochs=785,
    ),
}


def _zero_velocity(optimizer) -> None:
    """Zeroes a loaded SGD's velocity (pylearn2's fresh `Momentum` rule);
    its iteration count, hence the learning rate's decay, goes on."""
    for velocity in getattr(optimizer, "momentums", None) or ():
        velocity.assign(keras.ops.zeros(velocity.shape, velocity.dtype))


@keras_gradreg_export("keras_gradreg.protocol.train_then_continue")
def train_then_continue(
    model: keras.Model,
    train_data,
    validation_data,
    directory,
    protocol: MaxoutProtocol = MAXOUT_PROTOCOLS["mnist_pi"],
    *,
    monitor: str = "val_accuracy",
    mode: str = "max",
    callbacks=(),
    verbose="auto",
) -> dict:
    """Trains `model` with the maxout papers' two-stage protocol, resumably.

    Stage 1 fits `train_data` with `validation_data` monitored, the
    protocol's momentum ramp and `ResumableEarlyStopping(monitor, patience)`.
    The best model's loss on `train_data` becomes the target: with dropout
    on (`noisy_loss`) under `protocol.match == "noisy"`, as pylearn2's
    `train_objective`, or Keras's `evaluate` under "clean". Stage 2 loads
    the best model (with its optimizer: the learning rate and momentum go
    on from where they were; under `protocol.stage2_optimizer == "fresh"`
    the velocity starts at zero) and fits train + validation data until the
    same loss on the validation images (`val_noisy_loss`, or `val_loss`)
    falls to the target (`ContinueUntilMatched`) or
    `protocol.continue_max_epochs` pass. Every epoch is checkpointed under
    `directory`; calling again with the same arguments resumes an
    interrupted run, and returns at once for a finished one.

    Args:
        model: a compiled model, typically with `protocol.optimizer()`.
        train_data: `(x, y)` of the training split.
        validation_data: `(x, y)` of the validation split.
        directory: folder for checkpoints, logs and the final model.
        protocol: the settings (batch size, patience, epochs, momentum).
        monitor: stage 1's early-stopping log key.
        mode: "max" or "min" for `monitor`.
        callbacks: further callbacks for both stages (e.g. a timer).
        verbose: Keras's `fit` verbosity.

    Returns:
        A dict: `best_epoch` (1-based), `best` (the monitored value),
        `target`, `stage1_epochs`, `continue_epochs`, `matched` (whether
        stage 2 reached the target) and `model_path` (`directory/final.keras`).

    Raises:
        ValueError: if the best model of stage 1 was saved with another
            regularizer than `model`'s (stage 2 would train another
            objective), or the run's target was made under another `match`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (x, y), (x_val, y_val) = train_data, validation_data
    summary_path = directory / "protocol.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    stage1 = directory / "stage1"
    stop = ResumableEarlyStopping(stage1, monitor, mode, protocol.patience)
    target_path = stage1 / "target.json"
    if not target_path.exists():
        if not stop.finished(protocol.max_epochs):
            model.fit(
                x, y, batch_size=protocol.batch_size, epochs=protocol.max_epochs,
                validation_data=(x_val, y_val), verbose=verbose,
                callbacks=[
                    BackupAndRestore(str(stage1 / "backup")),
                    protocol.momentum_schedule(), stop,
                    keras.callbacks.CSVLogger(str(stage1 / "history.csv"), append=True),
                    *callbacks,
                ],
            )  # fmt: skip
        best = keras.saving.load_model(stop.best_path)
        if protocol.match == "noisy":
            target = noisy_loss(best, x, y)
        else:
            target = best.evaluate(
                x, y, batch_size=protocol.batch_size, verbose=0, return_dict=True
            )["loss"]
        last_epoch = json.loads(stop.state_path.read_text())["last_epoch"]
        _write_json(
            target_path,
            {
                "target": float(target),
                "match": protocol.match,
                "stage1_epochs": last_epoch + 1,
            },
        )
    state = json.loads(stop.state_path.read_text())
    stage1_summary = json.loads(target_path.read_text())
    recorded = stage1_summary.get("match", "clean")  # older runs: clean
    if recorded != protocol.match:
        raise ValueError(
            f"{target_path} holds a {recorded!r} "
            f"target; delete it and {directory / 'stage2'} to rerun stage 2 "
            f"(stage 1 is kept), or resume with the same protocol. Received: "
            f"match={protocol.match!r}"
        )
    stage2 = directory / "stage2"
    stage2.mkdir(exist_ok=True)
    given = getattr(model, "regularizer", None)
    model = keras.saving.load_model(stop.best_path)
    if given is not None and getattr(model, "regularizer", None) != given:
        raise ValueError(
            f"{stop.best_path} was saved with the regularizer "
            f"{model.regularizer}, and stage 2 would train it with that one "
            f"rather than this run's. Resume with the model the run was "
            f"started with, or delete {directory} to start afresh. Received: "
            f"model.regularizer={given}"
        )
    if protocol.stage2_optimizer == "fresh" and not (stage2 / "backup").exists():
        _zero_velocity(model.optimizer)
    noisy = protocol.match == "noisy"
    monitored = "val_noisy_loss" if noisy else "val_loss"
    matcher = ContinueUntilMatched(stage1_summary["target"], monitored)
    first = state["best_epoch"] + 1
    history = model.fit(
        np.concatenate([x, x_val]), np.concatenate([y, y_val]),
        batch_size=protocol.batch_size, initial_epoch=first,
        epochs=first + protocol.continue_max_epochs,
        validation_data=(x_val, y_val), verbose=verbose,
        callbacks=[
            BackupAndRestore(str(stage2 / "backup")),
            *([NoisyLoss(x_val, y_val)] if noisy else []), matcher,
            keras.callbacks.CSVLogger(str(stage2 / "history.csv"), append=True),
            *callbacks,
        ],
    )  # fmt: skip
    model_path = directory / "final.keras"
    _save_model(model, model_path)
    last_epoch = history.epoch[-1] if history.epoch else first - 1
    val_losses = history.history.get(monitored, [])
    summary = {
        "best_epoch": state["best_epoch"] + 1,
        "best": state["best"],
        "target": stage1_summary["target"],
        "match": protocol.match,
        "stage1_epochs": stage1_summary["stage1_epochs"],
        "continue_epochs": last_epoch - first + 1,
        "matched": bool(val_losses) and val_losses[-1] <= stage1_summary["target"],
        "model_path": str(model_path),
    }
    _write_json(summary_path, summary)
    return summary
