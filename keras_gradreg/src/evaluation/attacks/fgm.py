"""The fast gradient method: one worst-case step (FGSM for linf)."""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_eps
from keras_gradreg.src.evaluation.attacks._data import classification_accuracy
from keras_gradreg.src.evaluation.attacks._runner import (
    _compiled,
    _loss_and_gradient,
    _map_batches,
    _setup,
)
from keras_gradreg.src.evaluation.attacks._scoring import AttackLoss
from keras_gradreg.src.family import geometry
from keras_gradreg.src.family.norms import (
    Norm,
    canonical_norm,
    worst_case_perturbation,
)


def _build_fgm(scoring, shape, norm, targeted, input_range):
    def attack(x, y, eps):
        _, _, gradient = _loss_and_gradient(scoring, shape, x, y, targeted)
        delta = worst_case_perturbation(gradient, norm, ops.cast(eps, x.dtype))
        return x + geometry.clip_to_range(x, delta, input_range)

    return attack


@keras_gradreg_export("keras_gradreg.fgm")
def fgm(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    loss: AttackLoss = "cross_entropy",
    from_logits: bool | None = None,
    targeted: bool = False,
    input_range=(0.0, 1.0),
    batch_size: int = 500,
) -> np.ndarray:
    """Fast gradient method: one worst-case step `x + r*` in the `norm`-ball
    of radius `eps` (FGSM for "linf"), clipped to `input_range`.

    `r* = argmax_{||r||_p <= eps} g . r = worst_case_perturbation(g, norm,
    eps)` with `g = dL/dx` of each example's own loss: the exact maximizer
    for a model that is linear in x.

    Args:
        model: a Keras classifier (any model, not only `GradRegModel`).
        x: inputs, an array of shape (N, ...) inside `input_range`.
        y: integer labels, shape (N,) (target labels when `targeted`).
        norm: the perturbation norm p ("linf", "l2", "l1" or p >= 1).
        eps: the radius, >= 0.
        loss: "cross_entropy" (default), "margin" (Carlini-Wagner) or a
            callable `(y_true, y_pred) -> per-example losses`.
        from_logits: whether the model's outputs are logits; None infers it
            (see the module docstring).
        targeted: step toward the labels `y` instead of away from them.
        input_range: `(low, high)` of valid inputs, or None for unbounded.
        batch_size: examples per compiled call.

    Returns:
        The adversarial inputs, a NumPy array shaped like `x`.

    Raises:
        ValueError: for eps < 0, an unknown norm or loss, mismatched x/y
            lengths, labels out of range, or x outside `input_range`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.full((3, 4), 0.5, "float32")
        >>> x_adv = fgm(model, x, np.zeros(3, "int32"), "linf", 0.1)
        >>> float(np.abs(x_adv - x).max()) <= 0.1 + 1e-6
        True
    """
    norm, eps = canonical_norm(norm), check_eps(eps)
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, loss, from_logits, batch_size
    )
    shape = x.shape[1:]
    run = _compiled(
        model,
        ("fgm", scoring.key, shape, norm, targeted, input_range, str(x.dtype)),
        lambda: _build_fgm(scoring, shape, norm, targeted, input_range),
    )
    return _map_batches(run, x, y, batch_size, np.float32(eps))


@keras_gradreg_export("keras_gradreg.fgsm_accuracy")
def fgsm_accuracy(
    model,
    x,
    y,
    eps: float = 0.1,
    *,
    norm: Norm = "linf",
    loss: AttackLoss = "cross_entropy",
    input_range=(0.0, 1.0),
    batch_size: int = 500,
) -> float:
    """Accuracy of a classifier on `fgm(model, x, y, norm, eps)` examples.

    Args:
        model: a classifier whose outputs are class scores, shape (N, classes).
        x: inputs inside `input_range`.
        y: integer labels.
        eps: the radius (as in `fgm`).
        norm: the perturbation norm (as in `fgm`).
        loss: the attack's loss (as in `fgm`).
        input_range: `(low, high)` of valid inputs.
        batch_size: examples per compiled call.

    Returns:
        The fraction of adversarial examples still classified correctly.
    """
    x_adv = fgm(
        model,
        x,
        y,
        norm,
        eps,
        loss=loss,
        input_range=input_range,
        batch_size=batch_size,
    )
    return classification_accuracy(model, x_adv, y, batch_size=batch_size)


@keras_gradreg_export("keras_gradreg.attacks.FGM")
@dataclasses.dataclass(frozen=True)
class FGM:
    """The fast gradient method as a configured attack (see `fgm`): one
    worst-case step; FGSM for linf.

    Examples:
        >>> FGM().name
        'FGM'
    """

    loss: AttackLoss = "cross_entropy"

    @property
    def name(self) -> str:
        return "FGM"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        """Returns `fgm(model, x, y, norm, eps, ...)` with this configuration."""
        kwargs.pop("seed", None)  # FGM is deterministic
        return fgm(
            model, x, y, norm, eps, loss=self.loss, input_range=input_range, **kwargs
        )
