"""`CatastrophicOverfittingGuard`: stops single-step adversarial training
when its robustness to a multistep attack collapses."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_bool, check_number
from keras_gradreg.src.evaluation.robust_accuracy import RobustAccuracy


@keras_gradreg_export("keras_gradreg.callbacks.CatastrophicOverfittingGuard")
class CatastrophicOverfittingGuard(RobustAccuracy):
    """Stops training when PGD accuracy on held training data collapses.

    Single-step adversarial training (FGSM, and FGSM-RS at large radii) can
    overfit catastrophically: within an epoch the network makes its own
    one-step perturbation useless while its accuracy under a multistep
    attack falls to near zero (Wong, Rice & Kolter, 2020). As they do, this
    callback attacks a fixed batch of training data with PGD after every
    epoch, logs the robust accuracy under `name`, and when it falls more
    than `drop` below the best seen, stops training and (by default) puts
    back the weights of the best epoch. Use it beside the single-step forms
    (`"perturb"` with linf, `"fgsm_rs"`); `"n_fgsm"` and the multistep form
    rarely need it.

    Args:
        data: `(x, y)`, training examples with integer labels (a held
            batch: the first `subset_size` of a seeded shuffle are used).
        norm: the perturbation norm of the training.
        eps: the radius, usually the training sigma.
        attack: "pgd" (default: PGD-10), or an attack object.
        drop: the fall below the best robust accuracy, in (0, 1], that
            counts as a collapse (default 0.2: twenty points).
        restore_best_weights: whether to put back the best epoch's weights
            when it stops.
        subset_size: how many examples to attack (default 512).
        input_range: `(low, high)` of valid inputs.
        name: the log key (default "train_pgd_accuracy").
        seed: seed of the subset and of the random starts.

    Attributes:
        stopped_epoch: the 0-based epoch training stopped after, or None.
        best_epoch: the 0-based epoch of the best robust accuracy.

    Examples:
        >>> import numpy as np
        >>> x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
        >>> guard = CatastrophicOverfittingGuard((x, y), eps=0.3, drop=0.2)
        >>> # model.fit(x_train, y_train, callbacks=[guard])
    """

    def __init__(
        self,
        data,
        norm="linf",
        eps: float = 0.1,
        attack="pgd",
        drop: float = 0.2,
        restore_best_weights: bool = True,
        subset_size: int | None = 512,
        input_range=(0.0, 1.0),
        name: str = "train_pgd_accuracy",
        seed: int = 0,
    ):
        super().__init__(
            data, attack=attack, norm=norm, eps=eps, subset_size=subset_size,
            every=1, input_range=input_range, name=name, seed=seed,
        )  # fmt: skip
        self.drop = check_number("drop", drop, 0.0, exclusive=True, maximum=1.0)
        self.restore_best_weights = check_bool(
            "restore_best_weights", restore_best_weights
        )
        self.best = self.best_epoch = self.best_weights = self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = self.best_epoch = self.best_weights = self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        super().on_epoch_end(epoch, logs)
        value = logs[self.name]
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        elif self.best - value > self.drop:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            print(
                f"\nEpoch {epoch + 1}: {self.name} fell to {value:.2%} from "
                f"{self.best:.2%} at epoch {self.best_epoch + 1} (catastrophic "
                "overfitting); training stopped"
                + (", best weights restored." if self.restore_best_weights else ".")
            )
