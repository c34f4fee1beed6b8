"""Projected gradient descent (Madry et al. 2018) in linf, l2 and l1."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_eps, check_integer
from keras_gradreg.src.evaluation.attacks._data import check_attack_norm
from keras_gradreg.src.evaluation.attacks._runner import (
    _compiled,
    _improves,
    _keep_best,
    _loss_and_gradient,
    _pad,
    _restart_batches,
    _setup,
)
from keras_gradreg.src.evaluation.attacks._scoring import AttackLoss, _succeeded
from keras_gradreg.src.family import geometry
from keras_gradreg.src.family.norms import (
    Norm,
)

_PGD_NORMS = ("linf", "l2", "l1")


def _build_pgd(scoring, shape, norm, steps, targeted, input_range, l1_coordinates):
    """The whole PGD run on one batch, as one function of arrays:
    `(x, y, x_start, eps, step_size) -> (x_adv, success, loss)` on flat
    inputs."""

    def evaluate(x_flat, y):
        values, scores, gradient = _loss_and_gradient(
            scoring, shape, x_flat, y, targeted
        )
        values = ops.cast(values, "float32")
        return _succeeded(scores, y, targeted), values, gradient

    def keep_best(delta, success, value, best):
        best_delta, best_success, best_value = best
        better = _improves(success, value, best_success, best_value)
        return (
            ops.where(ops.expand_dims(better, -1), delta, best_delta),
            ops.where(better, success, best_success),
            ops.where(better, value, best_value),
        )

    def attack(x, y, x_start, eps, step_size):
        eps = ops.cast(eps, x.dtype)
        step_size = ops.cast(step_size, x.dtype)

        def step(i, state):
            delta, best = state
            success, value, gradient = evaluate(x + delta, y)
            best = keep_best(delta, success, value, best)
            direction = geometry.ascent_direction(
                gradient, norm, x + delta, input_range, l1_coordinates
            )
            delta = geometry.project(delta + step_size * direction, norm, eps)
            return geometry.clip_to_range(x, delta, input_range), best

        # The clean input is the first candidate: the result's loss is never
        # below the clean loss, whatever the random start.
        success, value, _ = evaluate(x, y)
        best = (ops.zeros_like(x), success, value)
        delta, best = ops.fori_loop(0, steps, step, (x_start - x, best))
        success, value, _ = evaluate(x + delta, y)
        best_delta, best_success, best_value = keep_best(delta, success, value, best)
        return x + best_delta, best_success, best_value

    return attack


@keras_gradreg_export("keras_gradreg.pgd")
def pgd(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    step_size: float | None = None,
    steps: int = 20,
    *,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss: AttackLoss = "cross_entropy",
    from_logits: bool | None = None,
    input_range=(0.0, 1.0),
    l1_sparsity: float = 0.95,
    batch_size: int = 500,
    seed: int | None = None,
) -> np.ndarray:
    """Projected gradient descent (Madry et al., 2018): `steps` steepest-
    ascent steps of length `step_size`, each projected back onto the
    eps-ball around x and into `input_range`.

    `x_{t+1} = clip_range(Proj_{||x' - x||_p <= eps}(x_t + step_size *
    d_p(g_t)))`, with the steepest-ascent direction `d_p` of the norm:
    `sign(g)` for linf, `g / ||g||_2` for l2, and for l1 a sparse step over
    the coordinates whose |g| is in the top `1 - l1_sparsity` fraction (the
    SLIDE step of Tramer & Boneh, 2019, with Duchi et al.'s l1 projection).
    Per example, the first iterate that fools the model is kept, otherwise
    the one of highest loss, over all steps and restarts.

    Defaults: linf, 20 steps of `2.5 * eps / steps`, one random start, the
    cross-entropy of the logits.

    Args:
        model: a Keras classifier.
        x: inputs of shape (N, ...) inside `input_range`.
        y: integer labels (target labels when `targeted`).
        norm: "linf", "l2" or "l1".
        eps: the radius, >= 0.
        step_size: the length of one step in `norm`; default `2.5 * eps /
            steps`.
        steps: iterations, >= 1.
        random_start: start each restart at a random point of the ball
            (otherwise at x).
        restarts: independent runs, >= 1; the worst case per example is kept.
        targeted: move toward the labels `y` (success: prediction == y).
        loss: "cross_entropy", "margin" (Carlini-Wagner) or a callable
            `(y_true, y_pred) -> per-example losses`.
        from_logits: whether outputs are logits; None infers it.
        input_range: `(low, high)` of valid inputs, or None for unbounded.
        l1_sparsity: for l1, the quantile of |g| above which coordinates
            move, in [0, 1).
        batch_size: examples per compiled call.
        seed: seed of the random starts (None: a fresh one).

    Returns:
        The adversarial inputs, a NumPy array shaped like `x`.

    Raises:
        ValueError: for eps < 0, steps < 1, restarts < 1, step_size <= 0, a
            norm other than linf/l2/l1, mismatched x/y, labels out of range,
            or x outside `input_range`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).uniform(size=(8, 4)).astype("float32")
        >>> x_adv = pgd(model, x, np.zeros(8, "int32"), "l2", eps=0.5, seed=0)
        >>> bool(np.linalg.norm(x_adv - x, axis=1).max() <= 0.5 + 1e-5)
        True
    """
    norm = check_attack_norm(norm, _PGD_NORMS, "pgd", " (use `fgm` for other p)")
    eps = check_eps(eps)
    steps = check_integer("steps", steps)
    restarts = check_integer("restarts", restarts)
    if step_size is None:
        step_size = 2.5 * eps / steps
    elif isinstance(step_size, bool) or not (
        isinstance(step_size, (int, float, np.number))
        and math.isfinite(step_size)
        and step_size > 0
    ):
        raise ValueError(
            "Argument `step_size` must be a finite number > 0 or None. "
            f"Received: step_size={step_size!r}"
        )
    if not 0.0 <= l1_sparsity < 1.0:
        raise ValueError(
            "Argument `l1_sparsity` must be in [0, 1). "
            f"Received: l1_sparsity={l1_sparsity!r}"
        )
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, loss, from_logits, batch_size
    )
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    coordinates = geometry.l1_coordinates(l1_sparsity, flat.shape[1])
    run = _compiled(
        model,
        ("pgd", scoring.key, shape, norm, steps, targeted, input_range, coordinates),
        lambda: _build_pgd(
            scoring, shape, norm, steps, targeted, input_range, coordinates
        ),
    )
    rng = np.random.default_rng(seed)
    best = flat.copy()
    best_success = np.zeros(len(x), bool)
    best_value = np.full(len(x), -np.inf, "float32")
    for restart in range(restarts):
        for part in _restart_batches(restart, best_success, batch_size):
            xb = flat[part]
            x0 = (
                geometry.random_start(rng, xb, norm, eps, input_range)
                if random_start
                else xb
            )
            x_adv, success, value = (
                ops.convert_to_numpy(t)[: len(part)]
                for t in run(
                    _pad(xb, batch_size),
                    _pad(y[part], batch_size),
                    _pad(x0, batch_size),
                    np.float32(eps),
                    np.float32(step_size),
                )
            )
            _keep_best((best, best_success, best_value), part, x_adv, success, value)
    return best.reshape(x.shape)


@keras_gradreg_export("keras_gradreg.attacks.PGD")
@dataclasses.dataclass(frozen=True)
class PGD:
    """Projected gradient descent as a configured attack (see `pgd`).

    Defaults: 20 steps of `2.5 * eps / steps` from one random start, the
    cross-entropy of the logits.

    Examples:
        >>> PGD(steps=40, restarts=2).name
        'PGD-40x2'
    """

    steps: int = 20
    restarts: int = 1
    step_size: float | None = None
    random_start: bool = True
    loss: AttackLoss = "cross_entropy"

    def __post_init__(self):
        check_integer("steps", self.steps)
        check_integer("restarts", self.restarts)

    @property
    def name(self) -> str:
        suffix = f"x{self.restarts}" if self.restarts > 1 else ""
        loss = "" if self.loss == "cross_entropy" else f" ({self.loss})"
        return f"PGD-{self.steps}{suffix}{loss}"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        """Returns `pgd(model, x, y, norm, eps, ...)` with this configuration."""
        return pgd(
            model,
            x,
            y,
            norm,
            eps,
            self.step_size,
            self.steps,
            random_start=self.random_start,
            restarts=self.restarts,
            loss=self.loss,
            input_range=input_range,
            **kwargs,
        )
