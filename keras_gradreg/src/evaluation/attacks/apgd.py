"""Auto-PGD (Croce & Hein, 2020): PGD with momentum and an automatic,
per-example step-size schedule, with the cross-entropy or the
difference-of-logits-ratio (DLR) loss, untargeted or targeted."""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_data, check_eps, check_integer
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
from keras_gradreg.src.evaluation.attacks.losses import apgd_loss, dlr_loss
from keras_gradreg.src.family.norms import Norm, per_example_norm
from keras_gradreg.src.training import backend as _backend

APGD_LOSSES = ("cross_entropy", "dlr")
_APGD_NORMS = ("linf", "l2")
_RHO = 0.75  # the fraction of improving steps below which the step halves
_MOMENTUM = 0.75


def checkpoints(steps: int) -> tuple[list[int], list[int]]:
    """The iterations at which APGD checks its step size, and the window
    length `k` used at each (Croce & Hein's schedule, as in their code).

    The first window is `max(int(0.22 * steps), 1)` iterations; each later
    one is `size_decr = max(int(0.03 * steps), 1)` shorter, but never below
    `max(int(0.06 * steps), 1)`.

    Examples:
        >>> checkpoints(100)[0][:4]
        [21, 40, 56, 69]
    """
    k = max(int(0.22 * steps), 1)
    minimum, decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    at, windows, i = [], [], k - 1
    while i < steps:
        at.append(i)
        windows.append(k)
        k = max(k - decrease, minimum)
        i += k
    return at, windows


def _build_apgd(scoring, shape, norm, steps, loss, targeted, input_range):
    """APGD on one batch as one function of arrays:
    `(x, y, y_target, x_start, eps) -> (x_adv, success, best_loss)` on flat
    inputs. Success is misclassification (`argmax != y`), also for the
    targeted loss, as in AutoAttack."""
    at, windows = checkpoints(steps)
    is_check = np.zeros(steps, "int32")
    window = np.ones(steps, "int32")
    is_check[at], window[at] = 1, windows
    longest = max(windows) if windows else 1

    def evaluate(x_flat, y, y_target):
        def fn(x):
            scores = scoring.scores(ops.reshape(x, (-1,) + shape))
            if scores.dtype != "float32":
                scores = ops.cast(scores, "float32")
            return apgd_loss(scores, y, y_target, loss, targeted), scores

        values, scores, gradient = _backend.values_and_input_gradient(fn, x_flat)
        wrong = ops.cast(ops.argmax(scores, axis=-1), "int32") != y
        return ops.cast(values, "float32"), wrong, gradient

    def constrain(x, point, eps):
        """Projects `point` onto the eps-ball around `x` and into range."""
        delta = point - x
        if norm == "linf":
            delta = ops.clip(delta, -eps, eps)
        else:
            length = ops.expand_dims(per_example_norm(delta, 2.0), -1)
            delta = delta * ops.minimum(1.0, eps / ops.maximum(length, 1e-12))
        point = x + delta
        return point if input_range is None else ops.clip(point, *input_range)

    def direction(gradient):
        if norm == "linf":
            return ops.sign(gradient)
        length = ops.expand_dims(per_example_norm(gradient, 2.0), -1)
        return gradient / (length + 1e-12)

    def attack(x, y, y_target, x_start, eps):
        eps = ops.cast(eps, x.dtype)
        rows = lambda v: ops.expand_dims(v, -1)  # noqa: E731
        value, wrong, gradient = evaluate(x_start, y, y_target)
        batch = ops.shape(x)[0]
        state = (
            x_start,  # the current iterate
            x_start,  # the previous one
            gradient,
            ops.ones((batch,), x.dtype) * 2.0 * eps,  # step sizes
            x_start,  # highest-loss point
            gradient,  # its gradient
            value,  # its loss
            ops.where(rows(wrong), x_start, x),  # latest misclassified point
            wrong,  # misclassified at some iterate
            ops.zeros((steps, batch), "float32"),  # losses per iteration
            value,  # best loss at the last check
            ops.ones((batch,), "float32"),  # step halved at the last check
        )
        check_flags = ops.convert_to_tensor(is_check)
        check_windows = ops.convert_to_tensor(window)

        def step(i, state):
            (current, previous, gradient, size, best, best_gradient, best_value,
             best_wrong, fooled, history, last_best, last_reduced) = state  # fmt: skip
            momentum = ops.where(i > 0, _MOMENTUM, 1.0)
            momentum = ops.cast(momentum, x.dtype)
            z = constrain(x, current + rows(size) * direction(gradient), eps)
            moved = (
                current
                + (z - current) * momentum
                + (current - previous) * (1.0 - momentum)
            )
            previous, current = current, constrain(x, moved, eps)
            value, wrong, gradient = evaluate(current, y, y_target)
            best_wrong = ops.where(rows(wrong), current, best_wrong)
            fooled = ops.logical_or(fooled, wrong)
            history = ops.scatter_update(
                history,
                ops.expand_dims(ops.expand_dims(i, 0), 0),
                ops.expand_dims(value, 0),
            )
            better = value > best_value
            best = ops.where(rows(better), current, best)
            best_gradient = ops.where(rows(better), gradient, best_gradient)
            best_value = ops.where(better, value, best_value)

            # At a checkpoint: halve the step of each example whose loss rose
            # in at most rho of the last k steps, or that did not improve
            # since the last check without a halving then; restart it from
            # its best point.
            k = ops.take(check_windows, i)
            lags = ops.arange(longest)
            newer = ops.mod(i - lags, steps)
            older = ops.mod(i - lags - 1, steps)
            rose = ops.take(history, newer, axis=0) > ops.take(history, older, axis=0)
            in_window = ops.expand_dims(lags < k, -1)
            count = ops.sum(ops.cast(ops.logical_and(rose, in_window), "float32"), 0)
            oscillating = count <= ops.cast(k, "float32") * _RHO
            stalled = ops.logical_and(last_reduced < 0.5, last_best >= best_value)
            halve = ops.logical_and(
                ops.logical_or(oscillating, stalled), ops.take(check_flags, i) > 0
            )
            checking = ops.take(check_flags, i) > 0
            last_reduced = ops.where(checking, ops.cast(halve, "float32"), last_reduced)
            last_best = ops.where(checking, best_value, last_best)
            size = ops.where(halve, size / 2.0, size)
            current = ops.where(rows(halve), best, current)
            gradient = ops.where(rows(halve), best_gradient, gradient)
            return (current, previous, gradient, size, best, best_gradient,
                    best_value, best_wrong, fooled, history, last_best,
                    last_reduced)  # fmt: skip

        state = ops.fori_loop(0, steps, step, state)
        best, best_value, best_wrong, fooled = state[4], state[6], state[7], state[8]
        return ops.where(rows(fooled), best_wrong, best), fooled, best_value

    return attack


def random_start(rng, x, norm, eps, input_range):
    """The reference's random start: a point at distance `eps` (the ball's
    boundary for APGD; FAB passes half its radius) along a uniform (linf)
    or Gaussian (l2) direction, clipped to the range."""
    t = rng.uniform(-1.0, 1.0, x.shape) if norm == "linf" else rng.normal(size=x.shape)
    order = np.inf if norm == "linf" else 2
    t = t / (np.linalg.norm(t, ord=order, axis=1, keepdims=True) + 1e-12)
    start = x + (eps * t).astype(x.dtype)
    return start if input_range is None else np.clip(start, *input_range)


def _run_apgd(model, x, y, norm, eps, steps, restarts, loss, targeted, target_rank,
              input_range, seed, batch_size, from_logits):  # fmt: skip
    norm = check_attack_norm(norm, _APGD_NORMS, "apgd")
    eps = check_eps(eps)
    if loss not in APGD_LOSSES:
        raise ValueError(
            f"Argument `loss` of APGD must be one of {APGD_LOSSES}. Received: "
            f"loss={loss!r}"
        )
    steps = check_integer("steps", steps)
    restarts = check_integer("restarts", restarts)
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, "cross_entropy", from_logits, batch_size
    )
    shape = x.shape[1:]
    if loss == "dlr":  # a clear error before compiling (see `dlr_loss`)
        probe = ops.convert_to_tensor(scoring.scores(x[:1]))
        dlr_loss(probe, y[:1], y[:1] if targeted else None)
    flat = x.reshape(len(x), -1)
    run = _compiled(
        model,
        ("apgd", scoring.key, shape, norm, steps, loss, targeted, input_range),
        lambda: _build_apgd(scoring, shape, norm, steps, loss, targeted, input_range),
    )
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
    best = flat.copy()
    best_success = np.zeros(len(x), bool)
    best_value = np.full(len(x), -np.inf, "float32")
    for restart in range(restarts):
        for part in _restart_batches(restart, best_success, batch_size):
            x0 = random_start(rng, flat[part], norm, eps, input_range)
            x_adv, success, value = (
                ops.convert_to_numpy(t)[: len(part)]
                for t in run(
                    _pad(flat[part], batch_size), _pad(y[part], batch_size),
                    _pad(targets[part], batch_size), _pad(x0, batch_size),
                    np.float32(eps),
                )
            )  # fmt: skip
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
    input_range=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
    from_logits: bool | None = None,
):
    """Untargeted Auto-PGD (Croce & Hein, 2020), linf or l2.

    From a random point on the ball's boundary, each iteration takes a
    steepest-ascent step of per-example size eta (starting at `2 eps`),
    mixes it with the previous move (momentum 0.75 after the first step),
    and projects onto the eps-ball and the input range. At checkpoints
    (after 22% of the iterations, then at shrinking intervals) an example's
    step size halves and its iterate returns to its best point if its loss
    rose in at most 75% of the steps since the last checkpoint, or if its
    best loss did not improve since a checkpoint that did not halve it.

    Threat model: `||x' - x||_p <= eps` inside `input_range`; the model runs
    with `training=False`. The whole run on a batch is one compiled program
    (XLA on TensorFlow and JAX; eager on torch).

    Args:
        model: a classifier (see `fgm` for how outputs are read).
        x: inputs in `input_range`.
        y: integer labels.
        norm: "linf" or "l2".
        eps: the radius, >= 0.
        steps: iterations per restart (AutoAttack: 100).
        restarts: random restarts; per example the first that fools the
            model, else the highest-loss point, is kept.
        loss: "cross_entropy" (APGD-CE) or "dlr" (APGD-DLR).
        input_range: `(low, high)` of valid inputs, or None.
        seed: seed of the random starts.
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
    """
    return _run_apgd(model, x, y, norm, eps, steps, restarts, loss, False, 0,
                     input_range, seed, batch_size, from_logits)  # fmt: skip


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
    The other arguments are `apgd`'s.

    Args:
        target_classes: how many runner-up classes to target, at most
            classes - 1; default all of them up to 9 (AutoAttack's 9 on a
            10-class problem).

    Returns:
        Adversarial inputs shaped like `x`.
    """
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
                          True, rank, input_range, seed, batch_size, from_logits)  # fmt: skip
        best[todo] = x_adv
        fooled[todo] = ~correct_predictions(model, x_adv, y[todo], batch_size)
    return best


@keras_gradreg_export("keras_gradreg.attacks.APGD")
@dataclasses.dataclass(frozen=True)
class APGD:
    """Auto-PGD as a configured attack (see `apgd`, `apgd_targeted`).

    `APGD()` is AutoAttack's APGD-CE (100 steps, one restart);
    `APGD(targeted=True)` its APGD-T (targeted DLR, 9 target classes);
    `APGD(loss="dlr")` the untargeted DLR variant.

    Examples:
        >>> APGD().name, APGD(targeted=True).name
        ('APGD-CE', 'APGD-T')
    """

    steps: int = 100
    restarts: int = 1
    loss: str = "cross_entropy"
    targeted: bool = False
    target_classes: int | None = None

    def __post_init__(self):
        check_integer("steps", self.steps)
        check_integer("restarts", self.restarts)
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
            return "APGD-T"
        return "APGD-CE" if self.loss == "cross_entropy" else "APGD-DLR"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        if self.targeted:
            return apgd_targeted(
                model, x, y, norm, eps, steps=self.steps,
                target_classes=self.target_classes, restarts=self.restarts,
                input_range=input_range, **kwargs,
            )  # fmt: skip
        return apgd(
            model, x, y, norm, eps, steps=self.steps, restarts=self.restarts,
            loss=self.loss, input_range=input_range, **kwargs,
        )  # fmt: skip
