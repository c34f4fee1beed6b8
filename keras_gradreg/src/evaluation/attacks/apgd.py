"""Auto-PGD (Croce & Hein, 2020): PGD with momentum and an automatic,
per-example step-size schedule, with the cross-entropy or the
difference-of-logits-ratio (DLR) loss, untargeted or targeted."""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, check_eps, check_integer
from keras_gradreg.src.evaluation.attacks import eot
from keras_gradreg.src.evaluation.attacks._data import (
    check_attack_norm,
    correct_predictions,
)
from keras_gradreg.src.evaluation.attacks._runner import (
    _batches,
    _compiled,
    _keep_best,
    _pad,
    _restart_batches,
    _setup,
    num_classes,
)
from keras_gradreg.src.evaluation.attacks.apgd_l1 import build_apgd_l1, l1_stages
from keras_gradreg.src.evaluation.attacks.apgd_lp import _build_apgd, checkpoints  # noqa: F401
from keras_gradreg.src.evaluation.attacks.losses import apgd_loss, dlr_loss
from keras_gradreg.src.family.norms import Norm

APGD_LOSSES = ("cross_entropy", "dlr")
_APGD_NORMS = ("linf", "l2", "l1")


def _evaluator(model, scoring, shape, loss, targeted, eot_samples):
    """`evaluate(x_flat, y, y_target, salt, step) -> (loss, misclassified,
    gradient)`: APGD's loss averaged over `eot_samples` draws of the
    model's randomness (draws `step * eot_samples`, ...), its gradient
    averaged likewise, the prediction of the last draw (`eot`)."""

    def evaluate(x_flat, y, y_target, salt, step):
        def fn(x):
            scores = scoring.scores(ops.reshape(x, (-1,) + shape))
            if scores.dtype != "float32":
                scores = ops.cast(scores, "float32")
            return apgd_loss(scores, y, y_target, loss, targeted), scores

        values, scores, gradient = eot.expected_values_and_gradient(
            model, fn, x_flat, eot_samples, salt, step * eot_samples
        )
        wrong = ops.cast(ops.argmax(scores, axis=-1), "int32") != y
        return ops.cast(values, "float32"), wrong, gradient

    return evaluate


def random_start(rng, x, norm, eps, input_range):
    """The reference's random start: a point at distance `eps` (the ball's
    boundary for APGD; FAB passes half its radius) along a uniform (linf)
    or Gaussian (l2) direction, clipped to the range; for l1, `x` plus
    standard Gaussian noise, which l1-APGD projects onto its ball and box."""
    if norm == "l1":
        return x + rng.normal(size=x.shape).astype(x.dtype)
    t = rng.uniform(-1.0, 1.0, x.shape) if norm == "linf" else rng.normal(size=x.shape)
    order = np.inf if norm == "linf" else 2
    t = t / (np.linalg.norm(t, ord=order, axis=1, keepdims=True) + 1e-12)
    start = x + (eps * t).astype(x.dtype)
    return start if input_range is None else np.clip(start, *input_range)


def _run_apgd(model, x, y, norm, eps, steps, restarts, loss, targeted, target_rank,
              input_range, seed, batch_size, from_logits, eot_samples=1,
              l1_eps_schedule=True):  # fmt: skip
    norm = check_attack_norm(norm, _APGD_NORMS, "apgd")
    eps = check_eps(eps)
    if loss not in APGD_LOSSES:
        raise ValueError(
            f"Argument `loss` of APGD must be one of {APGD_LOSSES}. Received: "
            f"loss={loss!r}"
        )
    steps = check_integer("steps", steps)
    restarts = check_integer("restarts", restarts)
    eot_samples = check_integer("eot_samples", eot_samples)
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, "cross_entropy", from_logits, batch_size
    )
    shape = x.shape[1:]
    if loss == "dlr":  # a clear error before compiling (see `dlr_loss`)
        probe = ops.convert_to_tensor(scoring.scores(x[:1]))
        dlr_loss(probe, y[:1], y[:1] if targeted else None)
    flat = x.reshape(len(x), -1)

    def program(kind, stage_steps):
        def build():
            evaluate = _evaluator(model, scoring, shape, loss, targeted, eot_samples)
            if kind == "apgd-l1":
                return build_apgd_l1(evaluate, stage_steps, input_range)
            return _build_apgd(evaluate, norm, stage_steps, input_range)

        key = (kind, scoring.key, shape, norm, stage_steps, loss, targeted,
               input_range, eot_samples)  # fmt: skip
        return _compiled(model, key, build)

    targets = y
    if targeted:
        scores = np.concatenate([
            ops.convert_to_numpy(scoring.scores(flat[a:b].reshape((-1, *shape))))
            for a, b in _batches(len(x), batch_size)
        ])  # fmt: skip
        if target_rank >= scores.shape[1]:
            raise ValueError(
                f"Targeted APGD's target rank {target_rank + 1} exceeds the model's "
                f"{scores.shape[1]} classes."
            )
        targets = np.argsort(-scores, axis=1)[:, target_rank].astype("int32")
    rng = np.random.default_rng(seed)

    def run_part(part):
        padded = [_pad(a[part], batch_size) for a in (flat, y, targets)]
        start = _pad(random_start(rng, flat[part], norm, eps, input_range), batch_size)
        salt = np.int32(rng.integers(0, 2**20))
        if norm != "l1":
            outputs = program("apgd", steps)(*padded, start, np.float32(eps), salt)
            return (ops.convert_to_numpy(t)[: len(part)] for t in outputs)
        fresh = np.float32(not l1_eps_schedule)
        for radius, stage_steps in l1_stages(eps, steps, l1_eps_schedule):
            run = program("apgd-l1", stage_steps)
            *outputs, start = run(*padded, start, np.float32(radius), fresh, salt)
        return (ops.convert_to_numpy(t)[: len(part)] for t in outputs)

    best = flat.copy()
    best_success = np.zeros(len(x), bool)
    best_value = np.full(len(x), -np.inf, "float32")
    for restart in range(restarts):
        for part in _restart_batches(restart, best_success, batch_size):
            x_adv, success, value = run_part(part)
            _keep_best((best, best_success, best_value), part, x_adv, success, value)
    return best.reshape(x.shape)


@keras_gradreg_export("keras_gradreg.attacks.apgd")
def apgd(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "cross_entropy",
    eot_samples: int = 1,
    l1_eps_schedule: bool = True,
    input_range=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
    from_logits: bool | None = None,
):
    """Untargeted Auto-PGD (Croce & Hein, 2020), linf, l2 or l1.

    linf and l2: from a random point on the ball's boundary, each iteration
    takes a steepest-ascent step of per-example size eta (starting at
    `2 eps`), mixes it with the previous move (momentum 0.75 after the first
    step), and projects onto the eps-ball and the input range. At
    checkpoints (after 22% of the iterations, then at shrinking intervals)
    an example's step size halves and its iterate returns to its best point
    if its loss rose in at most 75% of the steps since the last checkpoint,
    or if its best loss did not improve since a checkpoint that did not
    halve it.

    l1 (l1-APGD, Croce & Hein, 2021, added in 0.2.0): each step moves
    `sign(g)` on the coordinates whose `|g|` is in the top fraction k,
    with l1 length eta (starting at `eps`), and projects exactly onto
    `{||x' - x||_1 <= eps} ∩ input_range`; every `max(int(0.04 steps), 1)`
    steps k becomes the best point's sparsity / 1.5, and eta resets to eps
    (with the iterate back at its best point) where that sparsity fell by
    5%, else shrinks by 1.5, within `[eps / 10, eps]`. With
    `l1_eps_schedule` (AutoAttack's standard version for l1) the run
    starts at a Gaussian point projected onto the `3 eps` ball and spends
    30%, 30% and 40% of the steps at radii `3 eps`, `2 eps` and `eps`, each
    starting from the previous stage's best point (`apgd_l1.l1_stages`).

    Threat model: `||x' - x||_p <= eps` inside `input_range`; the model runs
    with `training=False`. The whole run on a batch is one compiled program
    (XLA on TensorFlow and JAX; eager on torch).

    For a model that is random at inference (its layers draw from Keras
    `SeedGenerator`s in `training=False` calls, e.g. a `Dropout` subclass
    whose `call` forces `training=True`), `eot_samples > 1` is AutoAttack's
    expectation over transformation: each step follows the gradient of the
    loss averaged over `eot_samples` draws of the model's randomness
    (AutoAttack's "rand" version: 20), and an iterate counts as
    misclassified by the prediction of the last draw. A model without seed
    generators is deterministic to Keras and evaluated once per step.

    Args:
        model: a classifier (see `fgm` for how outputs are read).
        x: inputs in `input_range`.
        y: integer labels.
        norm: "linf", "l2" or "l1".
        eps: the radius, >= 0.
        steps: iterations per restart (AutoAttack: 100).
        restarts: random restarts; per example the first that fools the
            model, else the highest-loss point, is kept (AutoAttack: 1 for
            linf and l2, 5 for l1).
        loss: "cross_entropy" (APGD-CE) or "dlr" (APGD-DLR).
        eot_samples: draws of the model's randomness averaged per gradient,
            >= 1 (1: none).
        l1_eps_schedule: for l1, run at `3 eps`, `2 eps`, `eps` as
            AutoAttack's standard version does (True, the default), or one
            run at `eps` from a fresh random start (False).
        input_range: `(low, high)` of valid inputs, or None.
        seed: seed of the random starts and of the model's draws.
        batch_size: examples per compiled call.
        from_logits: as in `fgm`.

    Returns:
        Adversarial inputs shaped like `x`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((8, 4), 0.5, "float32")
        >>> x_adv = apgd(model, x, np.zeros(8, "int32"), "linf", 0.1, steps=10)
        >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
        True
        >>> x_adv = apgd(model, x, np.zeros(8, "int32"), "l1", 0.5, steps=10)
        >>> bool(np.abs(x_adv - x).sum(axis=1).max() <= 0.5 + 1e-5)
        True
    """
    _check_schedule(l1_eps_schedule)
    return _run_apgd(model, x, y, norm, eps, steps, restarts, loss, False, 0,
                     input_range, seed, batch_size, from_logits, eot_samples,
                     l1_eps_schedule)  # fmt: skip


def _check_schedule(l1_eps_schedule):
    if not isinstance(l1_eps_schedule, bool):
        raise ValueError(
            "Argument `l1_eps_schedule` must be True or False. Received: "
            f"l1_eps_schedule={l1_eps_schedule!r}"
        )


@keras_gradreg_export("keras_gradreg.attacks.apgd_targeted")
def apgd_targeted(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    steps: int = 100,
    target_classes: int | None = None,
    restarts: int = 1,
    eot_samples: int = 1,
    l1_eps_schedule: bool = True,
    input_range=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
    from_logits: bool | None = None,
):
    """Targeted Auto-PGD with the targeted DLR loss (AutoAttack's APGD-T).

    For each of the `target_classes` classes ranked 2nd, 3rd, ... by the
    model's scores on the clean input, runs `apgd` on the targeted DLR loss
    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` on the points that are
    still classified correctly (as AutoAttack does); an example counts as
    broken once any run makes it misclassified. Per example the first
    fooling point is returned, else the last run's highest-loss point.
    The other arguments are `apgd`'s (linf, l2 or l1).

    Args:
        target_classes: how many runner-up classes to target, at most
            classes - 1; default all of them up to 9 (AutoAttack's 9 on a
            10-class problem; its standard version for l1 takes 5).

    Returns:
        Adversarial inputs shaped like `x`.
    """
    _check_schedule(l1_eps_schedule)
    classes = num_classes(model, x, from_logits)
    if target_classes is None:
        target_classes = min(9, classes - 1)
    target_classes = check_integer("target_classes", target_classes)
    if target_classes > classes - 1:
        raise ValueError(
            f"Argument `target_classes` must be at most {classes - 1} for a model "
            f"with {classes} classes. Received: target_classes={target_classes}"
        )
    # As AutoAttack: each target class attacks only the points that the
    # earlier ones left classified correctly.
    x, y = check_data(x, y, None)
    best = x.copy()
    fooled = ~correct_predictions(model, x, y, batch_size)
    for rank in range(1, target_classes + 1):
        todo = np.flatnonzero(~fooled)
        if not len(todo):
            break
        x_adv = _run_apgd(model, x[todo], y[todo], norm, eps, steps, restarts, "dlr",
                          True, rank, input_range, seed, batch_size, from_logits,
                          eot_samples, l1_eps_schedule)  # fmt: skip
        best[todo] = x_adv
        fooled[todo] = ~correct_predictions(model, x_adv, y[todo], batch_size)
    return best


@keras_gradreg_export("keras_gradreg.attacks.APGD")
@dataclasses.dataclass(frozen=True)
class APGD:
    """Auto-PGD as a configured attack (see `apgd`, `apgd_targeted`).

    `APGD()` is AutoAttack's APGD-CE (100 steps, one restart);
    `APGD(targeted=True)` its APGD-T (targeted DLR, 9 target classes);
    `APGD(loss="dlr")` the untargeted DLR variant; `eot_samples=20` their
    versions for randomized models (AutoAttack's "rand" version), named
    with the suffix "-EOT20".

    Examples:
        >>> APGD().name, APGD(targeted=True).name
        ('APGD-CE', 'APGD-T')
        >>> APGD(loss="dlr", eot_samples=20).name
        'APGD-DLR-EOT20'
    """

    steps: int = 100
    restarts: int = 1
    loss: str = "cross_entropy"
    targeted: bool = False
    target_classes: int | None = None
    eot_samples: int = 1
    l1_eps_schedule: bool = True

    def __post_init__(self):
        check_integer("steps", self.steps)
        check_integer("restarts", self.restarts)
        check_integer("eot_samples", self.eot_samples)
        _check_schedule(self.l1_eps_schedule)
        if self.target_classes is not None:
            check_integer("target_classes", self.target_classes)
        if self.loss not in APGD_LOSSES:
            raise ValueError(
                f"Argument `loss` must be one of {APGD_LOSSES}. Received: "
                f"loss={self.loss!r}"
            )

    @property
    def name(self) -> str:
        if self.targeted:
            name = "APGD-T"
        else:
            name = "APGD-CE" if self.loss == "cross_entropy" else "APGD-DLR"
        return name if self.eot_samples == 1 else f"{name}-EOT{self.eot_samples}"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        common = dict(
            steps=self.steps, restarts=self.restarts, eot_samples=self.eot_samples,
            l1_eps_schedule=self.l1_eps_schedule, input_range=input_range,
        )  # fmt: skip
        if self.targeted:
            return apgd_targeted(
                model, x, y, norm, eps, target_classes=self.target_classes,
                **common, **kwargs,
            )  # fmt: skip
        return apgd(model, x, y, norm, eps, loss=self.loss, **common, **kwargs)
