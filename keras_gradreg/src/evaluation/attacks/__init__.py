"""Attacks for evaluating robustness, one per module: `fgm`, `pgd`, `apgd`
(its losses in `losses`), `fab` (targeted FAB), `square`.

Threat model: each input x may be replaced by any x' with
`||x' - x||_p <= eps` inside the declared input range (default [0, 1]); the
norm is taken over all of an example's coordinates. The model is always run
with `training=False`, its state is never updated, and the attack's steps are
compiled (XLA on TensorFlow and JAX; eager on PyTorch).

Classification losses are computed on logits: when a functional model ends in
a softmax (a `Dense` layer with softmax activation or a softmax `Activation`
/ `Softmax` layer), the attack differentiates the logits before it, because a
saturated float32 softmax has exactly zero gradient and would mask the
model's weakness. Other models' outputs are taken as logits, or as
probabilities when they look like them (non-negative rows summing to 1).

Examples:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.full((2, 4), 0.5, "float32")
    >>> x_adv = pgd(model, x, np.array([0, 1]), "linf", eps=0.1, steps=5, seed=0)
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

from keras_gradreg.src.checks import (  # noqa: F401
    check_data,
    check_eps,
    check_input_range,
    check_integer,
)
from keras_gradreg.src.evaluation.attacks._data import (  # noqa: F401
    check_labels,
    classification_accuracy,
    correct_predictions,
    labels_of,
    predicted_classes,
)
from keras_gradreg.src.evaluation.attacks._runner import num_classes  # noqa: F401
from keras_gradreg.src.evaluation.attacks._scoring import OBJECTIVES, AttackLoss  # noqa: F401
from keras_gradreg.src.evaluation.attacks.apgd import APGD, apgd, apgd_targeted
from keras_gradreg.src.evaluation.attacks.fab import FAB, fab_targeted
from keras_gradreg.src.evaluation.attacks.fgm import FGM, fgm, fgsm_accuracy
from keras_gradreg.src.evaluation.attacks.gradients import input_gradients
from keras_gradreg.src.evaluation.attacks.losses import dlr_loss
from keras_gradreg.src.evaluation.attacks.pgd import PGD, pgd
from keras_gradreg.src.evaluation.attacks.square import Square, square

__all__ = [
    "APGD",
    "FAB",
    "FGM",
    "OBJECTIVES",
    "PGD",
    "AttackLoss",
    "Square",
    "apgd",
    "apgd_targeted",
    "classification_accuracy",
    "correct_predictions",
    "dlr_loss",
    "fab_targeted",
    "fgm",
    "fgsm_accuracy",
    "get",
    "input_gradients",
    "labels_of",
    "num_classes",
    "pgd",
    "predicted_classes",
    "square",
]


def get(attack) -> FGM | PGD | APGD | FAB | Square:
    """Resolves "fgm", "pgd", "apgd-ce", "apgd-t", "fab-t", "square" or an
    attack object (returned unchanged).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(attack, str) and attack.lower() in ("fgm", "fgsm"):
        return FGM()
    if isinstance(attack, str) and attack.lower() == "pgd":
        return PGD()
    if isinstance(attack, str) and attack.lower() in ("apgd", "apgd-ce"):
        return APGD()
    if isinstance(attack, str) and attack.lower() == "apgd-t":
        return APGD(targeted=True)
    if isinstance(attack, str) and attack.lower() == "fab-t":
        return FAB()
    if isinstance(attack, str) and attack.lower() == "square":
        return Square()
    if callable(attack) and hasattr(attack, "name"):
        return attack
    raise ValueError(
        "An attack must be 'fgm', 'pgd', 'apgd-ce', 'apgd-t', 'fab-t', 'square' or "
        "an attack object such as "
        f"`keras_gradreg.attacks.PGD(steps=40)`. Received: {attack!r}"
    )
