"""The Square attack (Andriushchenko et al., 2020): score-based random
search, no gradients, so masked gradients cannot fool it."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_eps, check_integer
from keras_gradreg.src.evaluation.attacks._data import check_attack_norm
from keras_gradreg.src.evaluation.attacks._runner import (
    _batches,
    _compiled,
    _pad,
    _setup,
)
from keras_gradreg.src.family.norms import Norm

_SQUARE_NORMS = ("linf", "l2")


def p_selection(p_init: float, iteration: int, queries: int) -> float:
    """The fraction of pixels a square covers at `iteration`: `p_init`
    halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
    of a 10,000-query budget (rescaled to `queries`), as in the reference.

    Examples:
        >>> p_selection(0.8, 0, 5000), p_selection(0.8, 15, 5000)
        (0.8, 0.4)
    """
    it = int(iteration / queries * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16),
                           (2000, 32), (4000, 64), (6000, 128), (8000, 256)):  # fmt: skip
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def _eta_rectangles(x, y):
    delta = np.zeros((x, y))
    x_c, y_c = x // 2 + 1, y // 2 + 1
    corner = [x_c - 1, y_c - 1]
    for counter in range(max(x_c, y_c)):
        delta[
            max(corner[0], 0) : min(corner[0] + 2 * counter + 1, x),
            max(0, corner[1]) : min(corner[1] + 2 * counter + 1, y),
        ] += 1.0 / (counter + 1) ** 2
        corner[0] -= 1
        corner[1] -= 1
    return delta / np.sqrt((delta**2).sum())


def _eta(s, rng):
    """The l2 attack's square: two opposite halves of concentric rings,
    unit l2 norm, randomly transposed."""
    delta = np.zeros((s, s))
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    delta /= np.sqrt((delta**2).sum())
    return delta.T if rng.random() > 0.5 else delta


def _images(x, data_format, image_shape=None):
    """`x` as (N, H, W, C), and the function that undoes it (to the shape
    of `image_shape` when given, which views each example as an image)."""
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if (
            not image_shape
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in image_shape)
            or math.prod(image_shape) != math.prod(x.shape[1:])
        ):
            raise ValueError(
                "Argument `image_shape` must be positive integers with as many "
                f"elements as one example ({math.prod(x.shape[1:])} for example "
                f"shape {x.shape[1:]}). Received: image_shape={image_shape}"
            )
        x = x.reshape((len(x), *image_shape))
    shape = x.shape[1:]
    if len(shape) == 2:
        return x[..., None], lambda v: v[..., 0]
    if len(shape) == 3 and data_format == "channels_first":
        return np.moveaxis(x, 1, -1), lambda v: np.moveaxis(v, -1, 1)
    if len(shape) == 3:
        return x, lambda v: v
    raise ValueError(
        "The Square attack perturbs squares of an image: inputs must be (H, W) "
        "or (H, W, C) per example; pass `image_shape` to view flat examples as "
        f"images (image_shape=(28, 28) for flattened MNIST). Received: example "
        f"shape {shape}"
    )


@keras_gradreg_export("keras_gradreg.attacks.square")
def square(
    model,
    x,
    y,
    norm: Norm = "linf",
    eps: float = 0.1,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    input_range=(0.0, 1.0),
    seed: int = 0,
    batch_size: int = 500,
    from_logits: bool | None = None,
    data_format: str | None = None,
    image_shape: tuple[int, ...] | None = None,
):
    """The untargeted Square attack (Andriushchenko et al., 2020), linf or l2.

    Random search on the margin `z_y - max_{j != y} z_j`: each query changes
    one random square window of the best point so far (linf: the window is
    set to +-eps per channel; l2: a ring-shaped pattern that moves mass
    between two windows at the same total norm) and keeps the change if the
    margin falls. The window shrinks on `p_selection`'s schedule. Only model
    *scores* are used, never gradients: a robustness number that Square
    lowers a lot below APGD's signals masked gradients. Points already
    misclassified are not attacked; each query runs the model once on the
    points not yet broken.

    Threat model: `||x' - x||_p <= eps` inside `input_range`; image-shaped
    inputs, (H, W) or (H, W, C) per example.

    Args:
        model: a classifier (see `fgm` for how outputs are read).
        x: images in `input_range`.
        y: integer labels.
        norm: "linf" or "l2".
        eps: the radius, >= 0.
        queries: model evaluations per point (AutoAttack: 5000).
        p_init: the initial fraction of pixels per square (AutoAttack: 0.8).
        input_range: `(low, high)` of valid inputs.
        seed: seed of the random search.
        batch_size: examples per compiled forward call.
        from_logits: as in `fgm`.
        data_format: "channels_last" or "channels_first" for (C, H, W)-style
            examples; default Keras's image data format.
        image_shape: the shape each example is viewed as for the square
            windows, (H, W) or (H, W, C) with as many elements as one
            example: `(28, 28)` for flattened MNIST. Default: the example's
            own shape.

    Returns:
        Adversarial inputs shaped like `x`.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(3)])
        >>> x = np.full((4, 4, 4), 0.5, "float32")
        >>> x_adv = square(model, x, np.zeros(4, "int32"), eps=0.1, queries=20)
        >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
        True
    """
    norm = check_attack_norm(norm, _SQUARE_NORMS, "square")
    eps = check_eps(eps)
    queries = check_integer("queries", queries)
    if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
        raise ValueError(
            f"Argument `p_init` must be in (0, 1]. Received: p_init={p_init!r}"
        )
    data_format = data_format or keras.config.image_data_format()
    if not isinstance(x, (dict, list, tuple)):
        _images(np.asarray(x)[:1], data_format, image_shape)  # before any work
    x, y, input_range, scoring, batch_size = _setup(
        model, x, y, input_range, "margin", from_logits, batch_size
    )
    low, high = input_range if input_range is not None else (-np.inf, np.inf)
    shape = x.shape[1:]
    images, to_view = _images(x, data_format, image_shape)

    def back(v):
        return to_view(v).reshape((len(v), *shape))

    n, h, w, c = images.shape
    if h < 2 or w < 2:
        raise ValueError(
            f"The Square attack needs images of at least 2x2 pixels. Received: "
            f"example shape {images.shape[1:3]} (height, width)"
        )
    run = _compiled(model, ("scores", scoring.key, shape), lambda: scoring.scores)

    def margins(points, labels):
        points = back(points.astype(x.dtype))
        out = []
        for a, b in _batches(len(points), batch_size):
            scores = ops.convert_to_numpy(run(_pad(points[a:b], batch_size)))
            out.append(scores[: b - a].astype("float64"))
        scores = np.concatenate(out)
        true = scores[np.arange(len(labels)), labels]
        scores[np.arange(len(labels)), labels] = -np.inf
        return true - scores.max(axis=1)

    rng = np.random.default_rng(seed)
    features = h * w * c
    best = images.astype("float64")
    todo = margins(images, y) > 0  # only the points classified correctly
    if not todo.any():
        return x.copy()
    index = np.flatnonzero(todo)
    clean = images[index].astype("float64")
    labels = y[index]
    if norm == "linf":
        stripes = rng.choice([-1.0, 1.0], size=(len(index), 1, w, c))
        current = np.clip(clean + eps * stripes, low, high)
    else:
        current = np.clip(clean + _l2_init(len(index), h, w, c, eps, rng), low, high)
    margin = margins(current, labels)
    for i in range(queries):
        active = np.flatnonzero(margin > 0)
        if not len(active):
            break
        p = p_selection(p_init, i, queries)
        if norm == "linf":
            s = min(max(int(round(math.sqrt(p * features / c))), 1), h - 1)
            vh, vw = rng.integers(0, h - s), rng.integers(0, w - s)
            candidate = current[active].copy()
            signs = rng.choice([-1.0, 1.0], size=(len(active), 1, 1, c))
            candidate[:, vh : vh + s, vw : vw + s, :] += 2.0 * eps * signs
            base = clean[active]
            candidate = np.clip(np.clip(candidate, base - eps, base + eps), low, high)
        else:
            candidate = _l2_step(clean[active], current[active], p, eps, rng, low, high)
        new = margins(candidate, labels[active])
        better = new < margin[active]
        margin[active[better]] = new[better]
        current[active[better]] = candidate[better]
    best[index] = current
    return back(best.astype(x.dtype))


def _l2_init(n, h, w, c, eps, rng):
    """The reference's l2 start: a grid of ring patterns with random signs,
    scaled to norm eps."""
    delta = np.zeros((n, h, w, c))
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    vh = start
    for _ in range(h // s):
        vw = start
        for _ in range(w // s):
            if vh + s <= h and vw + s <= w:
                pattern = _eta(s, rng)[None, :, :, None]
                delta[:, vh : vh + s, vw : vw + s, :] += pattern * rng.choice(
                    [-1.0, 1.0], size=(n, 1, 1, c)
                )
            vw += s
        vh += s
    norms = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    return delta / (norms + 1e-12) * eps


def _l2_step(clean, current, p, eps, rng, low, high):
    """One l2 query: a new ring pattern in window 1, mass removed from
    window 2, the perturbation kept at norm eps."""
    m, h, w, c = clean.shape
    delta = current - clean
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s += 1 if s % 2 == 0 else 0
    s = min(s, h - 1, w - 1)
    vh, vw = rng.integers(0, h - s), rng.integers(0, w - s)
    vh2, vw2 = rng.integers(0, h - s), rng.integers(0, w - s)
    window = delta[:, vh : vh + s, vw : vw + s, :]
    norms_window_1 = np.sqrt((window**2).sum(axis=(1, 2), keepdims=True))
    mask = np.zeros((1, h, w, 1))
    mask[:, vh : vh + s, vw : vw + s] = 1.0
    mask[:, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
    norms_image = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    norms_windows = np.sqrt(((delta * mask) ** 2).sum(axis=(1, 2, 3), keepdims=True))
    new = _eta(s, rng)[None, :, :, None] * rng.choice([-1.0, 1.0], size=(m, 1, 1, c))
    new = new + window / (1e-12 + norms_window_1)
    scale = np.sqrt(np.maximum(eps**2 - norms_image**2, 0.0) / c + norms_windows**2)
    new = new / (1e-12 + np.sqrt((new**2).sum(axis=(1, 2), keepdims=True))) * scale
    delta = delta.copy()
    delta[:, vh2 : vh2 + s, vw2 : vw2 + s, :] = 0.0
    delta[:, vh : vh + s, vw : vw + s, :] = new
    norms = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    return np.clip(clean + delta / (norms + 1e-12) * eps, low, high)


@keras_gradreg_export("keras_gradreg.attacks.Square")
@dataclasses.dataclass(frozen=True)
class Square:
    """The Square attack as a configured attack (see `square`); defaults are
    AutoAttack's: 5000 queries, `p_init=0.8`.

    Examples:
        >>> Square(queries=1000).name
        'Square-1000'
    """

    queries: int = 5000
    p_init: float = 0.8
    image_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        check_integer("queries", self.queries)

    @property
    def name(self) -> str:
        return "Square" if self.queries == 5000 else f"Square-{self.queries}"

    def __call__(self, model, x, y, norm, eps, *, input_range=(0.0, 1.0), **kwargs):
        return square(
            model, x, y, norm, eps, queries=self.queries, p_init=self.p_init,
            input_range=input_range, image_shape=self.image_shape, **kwargs,
        )  # fmt: skip
