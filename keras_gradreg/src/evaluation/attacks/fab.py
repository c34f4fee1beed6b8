"""FAB-T (Croce & Hein, 2020): the targeted Fast Adaptive Boundary attack,
a minimum-norm attack and the third attack of AutoAttack's standard
version.

Each iteration linearizes the decision boundary between the true class and
a target class at the current iterate and projects both the iterate and the
clean input onto it, inside the input box; the next iterate is a convex
combination of the two projections (the clean input's weighted by at most
`alpha_max`, more when the iterate is far from the boundary), pushed
slightly past the boundary. Once an iterate is adversarial, it is recorded
if it is the closest to the clean input so far, and the search steps back
toward the clean input to look for a closer one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_eps, check_integer, check_number
from keras_gradreg.src.evaluation.attacks._data import (
    check_attack_norm,
    correct_predictions,
)
from keras_gradreg.src.evaluation.attacks._runner import (
    _batches,
    _compiled,
    _pad,
    _restart_batches,
    _setup,
)
from keras_gradreg.src.evaluation.attacks.apgd import random_start
from keras_gradreg.src.family.norms import Norm
from keras_gradreg.src.training import backend as _backend

_FAB_NORMS = ("linf", "l2")
_TINY = 1e-12
_FAR = 1e10  # the distance of a point with no adversarial found yet


def _size(d, norm):
    """Per-example linf or l2 norm of the flat `d` (batch, features)."""
    if norm == "linf":
        return ops.max(ops.abs(d), axis=1)
    return ops.sqrt(ops.sum(d * d, axis=1))


def project_to_hyperplane(t, w, c, norm, input_range=(0.0, 1.0)):
    """The smallest perturbation `d` (in the linf or l2 norm) with
    `w . d = -c` and `t + d` inside `input_range`, per row: the projection
    of `t` onto the hyperplane `{z : w . z = w . t - c}` within the box.
    When no point of the box reaches the hyperplane, `d` moves `t` to the
    corner of the box closest to it.

    For a radius `lam`, the furthest each coordinate can move toward the
    hyperplane is `min(lam k_i, room_i)` (`k_i = 1` for linf, `|w_i|` for
    l2; `room_i` the distance to the box's face in that direction), so the
    hyperplane is reached where the concave, piecewise-linear, nondecreasing
    `g(lam) = sum_i |w_i| min(lam k_i, room_i)` equals `|c|`. Newton's
    method from `lam = 0` solves it exactly: each step lands on the root of
    the linear piece it starts on, never past the solution, and saturates
    at least one more coordinate until the piece holds the root (a few
    steps in practice, at most one per coordinate).

    Args:
        t: points, (batch, features).
        w: the hyperplanes' normals, (batch, features).
        c: `w . t - b` for the hyperplanes `w . z = b`, (batch,).
        norm: "linf" or "l2".
        input_range: `(low, high)` of the box, or None for no box.

    Returns:
        The perturbations, (batch, features).

    Examples:
        >>> import numpy as np
        >>> t = np.array([[0.5, 0.5]], "float32")
        >>> w = np.array([[1.0, 1.0]], "float32")
        >>> d = project_to_hyperplane(t, w, np.array([0.4], "float32"), "linf")
        >>> np.round(np.asarray(d, "float64"), 4).tolist()
        [[-0.2, -0.2]]
    """
    t, w, c = (ops.convert_to_tensor(v, "float32") for v in (t, w, c))
    # Orient each hyperplane so that it lies where w . d = -c <= 0.
    flip = ops.where(c < 0, -1.0, 1.0)
    w, c = w * ops.expand_dims(flip, -1), c * flip
    magnitude, toward = ops.abs(w), -ops.sign(w)
    column = lambda v: ops.expand_dims(v, -1)  # noqa: E731
    if input_range is None:  # the closed form without a box
        if norm == "linf":
            return toward * column(c / ops.maximum(ops.sum(magnitude, 1), _TINY))
        return -w * column(c / ops.maximum(ops.sum(w * w, 1), _TINY))
    low, high = input_range
    room = ops.maximum(ops.where(w > 0, t - low, high - t), 0.0)
    rate = ops.ones_like(w) if norm == "linf" else magnitude
    # Where each coordinate saturates; never for those the plane ignores.
    bend = ops.where(magnitude > 0, room / ops.maximum(rate, _TINY), _FAR)
    full = magnitude * room  # a saturated coordinate's share of g
    slope = magnitude * rate  # an unsaturated one's slope

    def newton(lam, saturated, moving):
        now = bend <= column(lam)
        reached = ops.sum(ops.where(now, full, 0.0), axis=1)
        rising = ops.sum(ops.where(now, 0.0, slope), axis=1)
        step = (c - reached) / ops.maximum(rising, _TINY)
        lam = ops.maximum(lam, ops.where(rising > 0, step, lam))
        count = ops.sum(ops.cast(bend <= column(lam), "int32"), axis=1)
        return lam, count, ops.any(count > saturated)

    lam = ops.zeros_like(c)
    state = (lam, ops.zeros_like(ops.cast(c, "int32")), ops.convert_to_tensor(True))
    lam, _, _ = ops.while_loop(lambda lam, n, moving: moving, newton, state)
    lam = ops.where(ops.sum(full, axis=1) < c, _FAR, lam)  # out of reach: corner
    return toward * ops.minimum(column(lam) * rate, room)


def _build_fab(scoring, shape, norm, steps, alpha_max, eta, beta, input_range):
    """FAB-T on one batch as one function of arrays:
    `(x, y, target, x_start) -> (closest adversarial, its distance)` on
    flat inputs; the distance is `_FAR` where none was found."""

    def gap_and_gradient(x_flat, y, target):
        """`z_target - z_y` and its input gradient."""

        def fn(x):
            scores = scoring.scores(ops.reshape(x, (-1,) + shape))
            scores = ops.cast(scores, "float32")
            classes = ops.shape(scores)[-1]
            pick = ops.one_hot(target, classes) - ops.one_hot(y, classes)
            return ops.sum(scores * pick, axis=-1), scores

        values, _, gradient = _backend.values_and_input_gradient(fn, x_flat)
        return values, ops.cast(gradient, "float32")

    def misclassified(x_flat, y):
        scores = scoring.scores(ops.reshape(x_flat, (-1,) + shape))
        return ops.cast(ops.argmax(scores, axis=-1), "int32") != y

    def attack(x, y, target, x_start):
        rows = lambda v: ops.expand_dims(v, -1)  # noqa: E731
        x = ops.cast(x, "float32")
        state = (
            ops.cast(x_start, "float32"),
            x,  # the closest adversarial point so far
            ops.zeros_like(x[:, 0]) + _FAR,  # its distance
        )

        def step(i, state):
            current, best, best_distance = state
            gap, w = gap_and_gradient(current, y, target)
            # The boundary, linearized at `current`: gap + w . (z - current) = 0.
            # Both projections in one call (they share the hyperplane).
            gap_at_x = gap + ops.sum(w * (x - current), axis=1)
            both = project_to_hyperplane(
                ops.concatenate([current, x]), ops.concatenate([w, w]),
                ops.concatenate([gap, gap_at_x]), norm, input_range,
            )  # fmt: skip
            to_current, to_clean = both[: ops.shape(x)[0]], both[ops.shape(x)[0] :]
            a_current = ops.maximum(_size(to_current, norm), 1e-8)
            a_clean = ops.maximum(_size(to_clean, norm), 1e-8)
            alpha = ops.minimum(a_current / (a_current + a_clean), alpha_max)
            moved = (current + eta * to_current) * (1.0 - rows(alpha)) + (
                x + eta * to_clean
            ) * rows(alpha)
            if input_range is not None:
                moved = ops.clip(moved, *input_range)
            wrong = misclassified(moved, y)
            distance = _size(moved - x, norm)
            closer = ops.logical_and(wrong, distance < best_distance)
            best = ops.where(rows(closer), moved, best)
            best_distance = ops.where(closer, distance, best_distance)
            current = ops.where(rows(wrong), x + (moved - x) * beta, moved)
            return current, best, best_distance

        _, best, best_distance = ops.fori_loop(0, steps, step, state)
        return best, best_distance

    return attack


def _distances(a, b, norm):
    d = (a.reshape(len(a), -1) - b.reshape(len(b), -1)).astype("float64")
    return np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d * d).sum(axis=1))


@keras_gradreg_export("keras_gradreg.attacks.fab_targeted")
def fab_targeted(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    steps: int = 100,
    target_classes: int | None = None,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    input_range=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
    from_logits: bool | None = None,
):
    """Targeted FAB (Croce & Hein, 2020), linf or l2: AutoAttack's FAB-T.

    A minimum-norm attack: for each of the `target_classes` classes ranked
    2nd, 3rd, ... by the model's scores on the clean input, on the points
    still robust, each of `steps` iterations linearizes the boundary
    `z_target = z_y` at the current iterate, projects the iterate and the
    clean input onto it inside `input_range` (exactly, see
    `project_to_hyperplane`), moves to their combination
    `(1 - a)(x_k + eta d_k) + a (x + eta d_0)` with
    `a = min(|d_k| / (|d_k| + |d_0|), alpha_max)`, and, when that point is
    misclassified, records it if it is the closest so far and steps back to
    `x + beta (x_k - x)`. A point counts as broken when its closest
    adversarial lies within eps. For a linear classifier the first
    projection is exact, so FAB-T returns the minimal perturbation.

    Threat model: `||x' - x||_p <= eps` inside `input_range`; the model runs
    with `training=False`. Defaults are AutoAttack's standard version: 9
    target classes, 1 restart (no random start), 100 iterations,
    `alpha_max=0.1`, `eta=1.05`, `beta=0.9`. The iterations on a batch are
    one compiled program (XLA on TensorFlow and JAX; eager on torch); each
    costs one forward and backward pass and one forward pass.

    Args:
        model: a classifier (see `fgm` for how outputs are read).
        x: inputs in `input_range`.
        y: integer labels.
        norm: "linf" or "l2".
        eps: the radius, >= 0.
        steps: iterations per target class and restart.
        target_classes: how many runner-up classes to target, at most
            classes - 1; default all of them up to 9.
        restarts: runs per target class; each after the first starts at a
            random point at distance eps / 2 (seeded with `seed`) and
            attacks only the points still robust.
        alpha_max: the largest weight of the clean input's projection.
        eta: the overshoot past the linearized boundary, >= 1.
        beta: the step back toward the clean input after a success, in
            (0, 1].
        input_range: `(low, high)` of valid inputs, or None.
        seed: seed of the random restarts.
        batch_size: examples per compiled call.
        from_logits: as in `fgm`.

    Returns:
        Inputs shaped like `x`: per example the closest adversarial point
        found if it lies within eps, else the clean input.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.full((8, 4), 0.5, "float32")
        >>> x_adv = fab_targeted(model, x, np.zeros(8, "int32"), "linf", 0.1, steps=10)
        >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
        True
    """
    norm = check_attack_norm(norm, _FAB_NORMS, "fab_targeted")
    eps = check_eps(eps)
    steps = check_integer("steps", steps)
    restarts = check_integer("restarts", restarts)
    alpha_max = check_number("alpha_max", alpha_max, maximum=1.0)
    eta = check_number("eta", eta, minimum=1.0, finite=True)
    beta = check_number("beta", beta, exclusive=True, maximum=1.0)
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, "cross_entropy", from_logits, batch_size
    )
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    scores = np.concatenate([
        ops.convert_to_numpy(scoring.scores(x[a:b])) for a, b in _batches(len(x), batch_size)
    ])  # fmt: skip
    classes = scores.shape[1]
    if target_classes is None:
        target_classes = min(9, classes - 1)
    target_classes = check_integer("target_classes", target_classes)
    if target_classes > classes - 1:
        raise ValueError(
            f"Argument `target_classes` must be at most {classes - 1} for a model "
            f"with {classes} classes. Received: target_classes={target_classes}"
        )
    run = _compiled(
        model,
        ("fab-t", scoring.key, shape, norm, steps, alpha_max, eta, beta, input_range),
        lambda: _build_fab(
            scoring, shape, norm, steps, alpha_max, eta, beta, input_range
        ),
    )
    ranking = np.argsort(-scores, axis=1, kind="stable")
    rng = np.random.default_rng(seed)
    best = flat.copy()
    # As AutoAttack: only the points classified correctly are attacked, and
    # each target class and restart only those still robust.
    broken = ~correct_predictions(model, x, y, batch_size)
    for rank in range(1, target_classes + 1):
        targets = ranking[:, rank].astype("int32")
        for restart in range(restarts):
            for part in _restart_batches(1, broken, batch_size):
                start = flat[part]
                if restart:
                    # As the reference: a restart starts at distance eps / 2.
                    start = random_start(rng, flat[part], norm, 0.5 * eps, input_range)
                x_adv, _ = (
                    ops.convert_to_numpy(t)[: len(part)]
                    for t in run(
                        _pad(flat[part], batch_size), _pad(y[part], batch_size),
                        _pad(targets[part], batch_size), _pad(start, batch_size),
                    )
                )  # fmt: skip
                x_adv = x_adv.astype(flat.dtype)
                inside = _distances(x_adv, flat[part], norm) <= eps
                fooled = inside & ~correct_predictions(
                    model, x_adv.reshape((-1, *shape)), y[part], batch_size
                )
                best[part[fooled]] = x_adv[fooled]
                broken[part[fooled]] = True
    return best.reshape(x.shape)


@keras_gradreg_export("keras_gradreg.attacks.FAB")
@dataclasses.dataclass(frozen=True)
class FAB:
    """Targeted FAB as a configured attack (see `fab_targeted`); defaults are
    AutoAttack's FAB-T: 100 iterations, 9 target classes, one restart,
    `alpha_max=0.1`, `eta=1.05`, `beta=0.9`.

    Examples:
        >>> FAB().name, FAB(steps=20).name
        ('FAB-T', 'FAB-T-20')
    """

    steps: int = 100
    target_classes: int | None = None
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self):
        check_integer("steps", self.steps)
        check_integer("restarts", self.restarts)
        check_integer("target_classes", self.target_classes, allow_none=True)
        check_number("alpha_max", self.alpha_max, maximum=1.0)
        check_number("eta", self.eta, minimum=1.0, finite=True)
        check_number("beta", self.beta, exclusive=True, maximum=1.0)

    @property
    def name(self) -> str:
        return "FAB-T" if self.steps == 100 else f"FAB-T-{self.steps}"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        return fab_targeted(
            model, x, y, norm, eps, steps=self.steps,
            target_classes=self.target_classes, restarts=self.restarts,
            alpha_max=self.alpha_max, eta=self.eta, beta=self.beta,
            input_range=input_range, **kwargs,
        )  # fmt: skip
