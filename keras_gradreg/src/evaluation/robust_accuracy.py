"""`RobustAccuracy`: robust accuracy on validation data in each epoch's
logs."""

from __future__ import annotations

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, check_eps, check_integer
from keras_gradreg.src.evaluation import attacks
from keras_gradreg.src.evaluation.robustness import SUITES, evaluate_robustness
from keras_gradreg.src.family.norms import canonical_norm


@keras_gradreg_export("keras_gradreg.callbacks.RobustAccuracy")
class RobustAccuracy(keras.callbacks.Callback):
    """Adds the robust accuracy on validation data to each epoch's logs.

    After every `every`-th epoch it attacks a fixed subset of the validation
    data and logs the fraction classified correctly both clean and
    adversarially, under `name` (default "val_robust_accuracy"), so that
    `EarlyStopping`, `ModelCheckpoint`, `CSVLogger` and KerasTuner can use it.
    Place it *before* the callbacks that read it: Keras calls callbacks in
    list order.

    Args:
        validation_data: `(x_val, y_val)` with integer labels.
        attack: "pgd" (default: PGD-10, cheap enough for every epoch but
            an **upper bound** on robust accuracy, like every attack but the
            standard suite), "fgm", "apgd-ce", "apgd-t", "fab-t", "square",
            an attack object, a list of them run as a cascade (each on the
            points the ones before left robust, as `evaluate_robustness`
            does), or the name of one of `evaluate_robustness`'s suites:
            "standard" (the number to report; far slower), "standard-no-fab",
            "rand" (for a model that is random at inference: expectation
            over 20 draws, accuracy the mean over draws) or "fast" (FGM and
            PGD-20, the worse of the two).
        norm: the perturbation norm.
        eps: the radius.
        subset_size: how many validation examples to attack (the first ones
            of a seeded shuffle), or None for all.
        every: attack after the first epoch and every `every`-th epoch
            after it; the epochs in between log the last measured value
            (so `EarlyStopping` and `ModelCheckpoint` never see a gap or a
            NaN; `last_measured_epoch` says which epoch it came from).
        input_range: `(low, high)` of valid inputs.
        name: the log key.
        seed: seed of the subset and of the random starts.
        image_shape: how the suites' Square attack views each example
            (`(28, 28)` for flattened MNIST); default its own shape.

    Examples:
        >>> import numpy as np
        >>> x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
        >>> callback = RobustAccuracy((x, y), eps=0.1, subset_size=4)
        >>> # model.fit(..., callbacks=[callback, keras.callbacks.EarlyStopping(
        >>> #     "val_robust_accuracy", mode="max")])
    """

    def __init__(
        self,
        validation_data,
        attack="pgd",
        norm="linf",
        eps: float = 0.1,
        subset_size: int | None = 1000,
        every: int = 1,
        input_range=(0.0, 1.0),
        name: str = "val_robust_accuracy",
        seed: int = 0,
        image_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        try:
            x, y = validation_data
        except (TypeError, ValueError):
            raise ValueError(
                "Argument `validation_data` must be a pair (x_val, y_val). "
                f"Received: validation_data of type {type(validation_data).__name__}"
            ) from None
        x, y = check_data(x, y, None)
        if len(x) == 0:
            raise ValueError(
                "Argument `validation_data` must hold at least one example. Received: 0"
            )
        check_integer("subset_size", subset_size, allow_none=True)
        check_integer("every", every)
        check_eps(eps)
        # A named suite is `evaluate_robustness`'s own (its attacks for the
        # norm, the draws of "rand"); anything else is run here.
        self.suite = attack if isinstance(attack, str) and attack in SUITES else None
        if image_shape is not None and self.suite is None:
            raise ValueError(
                "Argument `image_shape` views the examples for a named suite's "
                "Square attack; give a `Square(image_shape=...)` in a list "
                f"instead. Received: image_shape={image_shape!r} with "
                f"attack={attack!r}"
            )
        if isinstance(attack, str) and attack == "pgd":
            attack = attacks.PGD(steps=10)
        if self.suite is not None:
            self.attack = None
        elif isinstance(attack, (list, tuple)):
            if not attack:
                raise ValueError(
                    "Argument `attack` must name at least one attack. Received: "
                    f"attack={attack!r}"
                )
            self.attack = tuple(attacks.get(a) for a in attack)
        else:
            self.attack = attacks.get(attack)
        self.norm = canonical_norm(norm)
        self.eps = float(eps)
        self.subset_size = subset_size
        self.every = every
        self.input_range = input_range
        self.name = name
        self.seed = seed
        self.image_shape = image_shape
        self.last_value = self.last_measured_epoch = None
        order = np.random.default_rng(seed).permutation(len(x))[:subset_size]
        self.x, self.y = x[order], y[order]

    def on_train_begin(self, logs=None):
        self.last_value, self.last_measured_epoch = None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.last_value is None or epoch % self.every == 0:
            self.last_value = self.robust_accuracy()
            self.last_measured_epoch = epoch
        logs[self.name] = self.last_value

    def robust_accuracy(self) -> float:
        """Attacks the subset with the model's current weights."""
        if self.suite is not None:
            report = evaluate_robustness(
                self.model, self.x, self.y, [self.norm], {self.norm: [self.eps]},
                self.suite, input_range=self.input_range, seed=self.seed,
                checks=False, verbose=0, image_shape=self.image_shape,
            )  # fmt: skip
            return report.accuracy(self.norm, self.eps)
        robust = attacks.correct_predictions(self.model, self.x, self.y)
        cascade = self.attack if isinstance(self.attack, tuple) else (self.attack,)
        for attack in cascade:  # each on the points still robust
            if not robust.any():
                break
            x_adv = attack(
                self.model, self.x[robust], self.y[robust], self.norm, self.eps,
                input_range=self.input_range, seed=self.seed,
            )  # fmt: skip
            robust[robust] = attacks.correct_predictions(
                self.model, x_adv, self.y[robust]
            )
        return float(np.mean(robust))
