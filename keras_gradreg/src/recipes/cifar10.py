"""The CIFAR-10 recipe of the fast adversarial-training papers, as one
settings object: network, augmentation, schedule, weight averaging and
mixed precision around a family member."""

from __future__ import annotations

import contextlib
import dataclasses

import keras

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import (
    check_bool,
    check_choice,
    check_integer,
    check_number,
)
from keras_gradreg.src.family import forms
from keras_gradreg.src.recipes.augmentation import PADDING_MODES, PadCropFlip
from keras_gradreg.src.recipes.batches import AugmentedBatches
from keras_gradreg.src.recipes.preact_resnet import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    preact_resnet18,
)
from keras_gradreg.src.recipes.schedules import CyclicLearningRate

#: The dtype policies a recipe trains under (None: float32).
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")


@keras_gradreg_export("keras_gradreg.recipes.CIFAR10Recipe")
@dataclasses.dataclass(frozen=True)
class CIFAR10Recipe:
    """How the fast adversarial-training papers train PreActResNet-18 on
    CIFAR-10, around one member of the family (see `CIFAR10_RECIPES`).

    `prepare(x, y)` returns the compiled `GradRegModel` and the arguments
    of its `fit`: `models.preact_resnet18` trained at linf radius `sigma`
    on images in [0, 1] (`input_range=(0, 1)`), shuffled and augmented per
    image (`layers.PadCropFlip` in `datasets.AugmentedBatches`), SGD with
    momentum on the cyclic learning rate (`optimizers.CyclicLearningRate`)
    with PyTorch's coupled weight decay, and optionally Keras's weight
    averaging and a mixed dtype policy.

    Attributes:
        form: the member's form (its shorthand, e.g. "fgsm_rs").
        form_arguments: `(name, value)` pairs of the form's arguments,
            e.g. `(("weight", 0.2),)` for GradAlign's lambda.
        sigma: the linf radius in pixel units of [0, 1] (8/255).
        alpha: the weight of the clean loss (0: the papers train on the
            perturbed images alone).
        epochs: passes over the training images.
        batch_size: examples per update.
        learning_rate: the cyclic schedule's peak.
        peak: where the peak lies, as a fraction of the run.
        momentum: SGD's momentum.
        weight_decay: PyTorch's SGD `weight_decay` (see
            `models.preact_resnet18`).
        normalize: normalize the inputs inside the network by CIFAR-10's
            channel statistics.
        padding_mode: the augmentation's border, "zero" or "reflect".
        drop_remainder: leave out each epoch's last, smaller batch.
        ema_momentum: the momentum of Keras's exponential moving average
            of the weights (`use_ema`; the average replaces the weights
            when `fit` ends), or None for none. Batch normalization's
            moving statistics are the trained weights', not re-estimated.
        mixed_precision: None (float32), "mixed_float16" (with Keras's
            loss scaling, which the train steps extend to the input
            gradient) or "mixed_bfloat16".
        width: the network's first-stage filters (64; smaller for CPUs).

    Raises:
        ValueError: naming the field and the value received, for a value
            out of its range.
    """

    form: str = "fgsm_rs"
    form_arguments: tuple = ()
    sigma: float = 8 / 255
    alpha: float = 0.0
    epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 0.2
    peak: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    normalize: bool = True
    padding_mode: str = "zero"
    drop_remainder: bool = False
    ema_momentum: float | None = None
    mixed_precision: str | None = None
    width: int = 64

    def __post_init__(self):
        check_number("sigma", self.sigma, exclusive=True, finite=True)
        check_integer("epochs", self.epochs)
        check_integer("batch_size", self.batch_size)
        check_number("learning_rate", self.learning_rate, exclusive=True, finite=True)
        check_number("peak", self.peak, exclusive=True, below=1.0)
        check_number("momentum", self.momentum, below=1.0)
        check_number("weight_decay", self.weight_decay, finite=True)
        check_bool("normalize", self.normalize)
        check_choice("padding_mode", self.padding_mode, PADDING_MODES)
        check_bool("drop_remainder", self.drop_remainder)
        if self.ema_momentum is not None:
            check_number("ema_momentum", self.ema_momentum, exclusive=True, below=1.0)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check_integer("width", self.width)
        valid = isinstance(self.form_arguments, tuple) and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
            for p in self.form_arguments
        )
        if not valid:
            raise ValueError(
                "Argument `form_arguments` must be a tuple of (name, value) "
                f"pairs. Received: form_arguments={self.form_arguments!r}"
            )

    def replace(self, **changes) -> CIFAR10Recipe:
        """A copy with `changes` (validated the same way)."""
        return dataclasses.replace(self, **changes)

    def regularizer(self) -> dict:
        """The `GradRegModel` arguments of the member trained."""
        form = forms.get(self.form)
        if self.form_arguments:
            form = form.replace(**dict(self.form_arguments))
        return {
            "norm": "linf",
            "sigma": self.sigma,
            "form": form,
            "alpha": self.alpha,
            "input_range": (0.0, 1.0),
        }

    def build(self, *, float32: bool = False):
        """The uncompiled network under the recipe's dtype policy (or in
        float32 with `float32=True`: a copy to evaluate a mixed-precision
        model in, by `set_weights`)."""
        policy = None if float32 else self.mixed_precision
        statistics = (CIFAR10_MEAN, CIFAR10_STD) if self.normalize else (None, None)
        with _dtype_policy(policy):
            return preact_resnet18(
                width=self.width,
                mean=statistics[0],
                std=statistics[1],
                weight_decay=self.weight_decay,
                **self.regularizer(),
            )

    def optimizer(self, steps_per_epoch: int) -> keras.optimizers.SGD:
        """SGD on the cyclic schedule over `epochs * steps_per_epoch`
        updates, with weight averaging if `ema_momentum` is set."""
        schedule = CyclicLearningRate(
            self.learning_rate,
            self.epochs * check_integer("steps_per_epoch", steps_per_epoch),
            peak=self.peak,
        )
        averaging = {}
        if self.ema_momentum is not None:
            averaging = {"use_ema": True, "ema_momentum": self.ema_momentum}
        return keras.optimizers.SGD(schedule, momentum=self.momentum, **averaging)

    def batches(self, x, y, *, steps=None, seed: int = 0) -> AugmentedBatches:
        """The training batches: shuffled, padded by 4, cropped and
        flipped per image (`steps` caps the batches per epoch)."""
        augmentation = PadCropFlip(4, self.padding_mode, seed=seed)
        return AugmentedBatches(
            x, y, self.batch_size, augmentation,
            drop_remainder=self.drop_remainder, steps=steps, seed=seed,
        )  # fmt: skip

    def prepare(self, x, y, *, steps=None, seed: int = 0):
        """The compiled model and its `fit` arguments.

        Args:
            x: training images in [0, 1], `(n, 32, 32, 3)`.
            y: their integer labels.
            steps: at most this many batches per epoch (None: all); the
                schedule spans the batches trained.
            seed: seeds the batches' order and augmentation.

        Returns:
            `(model, fit_arguments)`: call `model.fit(**fit_arguments,
            callbacks=[...])`, the arguments holding `x` (the batches),
            `epochs` and `callbacks` (the batches' epoch callback; add
            yours to that list).
        """
        batches = self.batches(x, y, steps=steps, seed=seed)
        model = self.build()
        with _dtype_policy(self.mixed_precision):
            # Under mixed_float16, compile wraps the optimizer in Keras's
            # LossScaleOptimizer.
            model.compile(
                optimizer=self.optimizer(len(batches)),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        fit_arguments = {
            "x": batches,
            "epochs": self.epochs,
            "callbacks": [batches.epoch_callback()],
        }
        return model, fit_arguments


@contextlib.contextmanager
def _dtype_policy(policy):
    """Sets Keras's global dtype policy to `policy` (None: leave it), and
    back afterwards: the layers built inside keep it."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


#: The papers' recipes at linf 8/255. "fgsm_rs": Wong, Rice & Kolter
#: (ICLR 2020), 15 epochs, peak 0.2 at the middle, inputs normalized.
#: "gradalign": Andriushchenko & Flammarion (NeurIPS 2020), FGSM from
#: zero with lambda 0.2, 30 epochs, peak 0.3 at 2/5 of the run, inputs not
#: normalized, the last batch dropped. "trades": TRADES (Zhang et al., ICML
#: 2019) with beta 6 and 10 ascent steps of 2/255, on the same network and
#: the FGSM-RS schedule over 30 epochs (the paper trained a WideResNet-34-10
#: with a step decay).
CIFAR10_RECIPES = {
    "fgsm_rs": CIFAR10Recipe(),
    "gradalign": CIFAR10Recipe(
        form="gradalign",
        form_arguments=(("weight", 0.2), ("step", 1.0)),
        epochs=30,
        learning_rate=0.3,
        peak=0.4,
        normalize=False,
        drop_remainder=True,
    ),
    "trades": CIFAR10Recipe(
        form="trades",
        form_arguments=(("beta", 6.0), ("steps", 10)),
        epochs=30,
    ),
}


@keras_gradreg_export("keras_gradreg.recipes.cifar10_recipe")
def cifar10_recipe(x, y, recipe="fgsm_rs", *, steps=None, seed: int = 0, **changes):
    """The compiled model and `fit` arguments of a CIFAR-10 recipe.

    Args:
        x: training images in [0, 1], `(n, 32, 32, 3)`.
        y: their integer labels.
        recipe: a key of `CIFAR10_RECIPES` ("fgsm_rs", "gradalign",
            "trades") or a `CIFAR10Recipe`.
        steps: at most this many batches per epoch (None: all).
        seed: seeds the batches' order and augmentation.
        **changes: `CIFAR10Recipe` fields to change (`epochs`, `width`,
            `ema_momentum`, `mixed_precision`, ...).

    Returns:
        `(model, fit_arguments)`, as `CIFAR10Recipe.prepare`.

    Raises:
        ValueError: for an unknown recipe or a field out of its range.

    Examples:
        >>> import numpy as np
        >>> x = np.zeros((8, 32, 32, 3), "float32")
        >>> model, fit_arguments = cifar10_recipe(x, np.zeros(8), width=2, epochs=1)
        >>> model.regularizer.form.name, fit_arguments["epochs"]
        ('fgsm_rs', 1)
        >>> # model.fit(**fit_arguments)
    """
    if not isinstance(recipe, CIFAR10Recipe):
        check_choice("recipe", recipe, tuple(CIFAR10_RECIPES))
        recipe = CIFAR10_RECIPES[recipe]
    return recipe.replace(**changes).prepare(x, y, steps=steps, seed=seed)
