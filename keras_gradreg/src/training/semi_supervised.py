"""Semi-supervised batches for the label-free member.

The label-free member (`virtual=True`) adds `virtual_weight * KL(p(x) ||
p(x + r*))` on every row of a batch, labeled or not, while the supervised
loss sees only rows with a nonzero `sample_weight`. Semi-supervised training
is then ordinary `model.fit` on batches that mix a few labeled rows with
many unlabeled ones (weight 0, any label):

    >>> import numpy as np
    >>> x = np.random.rand(1000, 4).astype("float32")
    >>> y = np.arange(1000) % 10
    >>> labeled = balanced_labels(y, per_class=2, seed=0)
    >>> batches = SemiSupervisedBatches(
    ...     x[labeled], y[labeled], x, labeled_batch_size=8, unlabeled_batch_size=32
    ... )
    >>> xb, yb, wb = batches[0]
    >>> xb.shape, wb.tolist().count(5.0)  # 8 labeled rows of 40 weigh 40 / 8
    ((40, 4), 8)

`model.fit(batches, epochs=...)` runs on every backend (a Keras `PyDataset`).
With batch normalization, use `passes="separate"` and a model built with
`labeled_rows=labeled_batch_size` (see `SemiSupervisedBatches`).
Compile accuracy as `weighted_metrics=["accuracy"]`: plain `metrics` ignore
the sample weights and would score the unlabeled rows' placeholder labels.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer

PASSES = ("mixed", "separate")


@keras_gradreg_export("keras_gradreg.semi_supervised.balanced_labels")
def balanced_labels(y, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_class` examples of each class, drawn at random.

    The classic semi-supervised MNIST benchmark keeps 10 labels per class
    (100 in all) and uses every training image unlabeled.

    Args:
        y: integer class labels, shape (n,).
        per_class: how many examples to keep from each class (>= 1).
        seed: the draw's seed.

    Returns:
        Sorted int64 indices into `y`, `per_class` per class.

    Raises:
        ValueError: if `per_class < 1` or a class has fewer examples.

    Examples:
        >>> balanced_labels(np.array([0, 1, 0, 1, 0, 1]), per_class=1).shape
        (2,)
    """
    y = np.asarray(y).reshape(-1)
    check_integer("per_class", per_class)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < per_class:
            raise ValueError(
                f"Class {label} has {len(members)} examples, fewer than "
                f"`per_class`. Received: per_class={per_class}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@keras_gradreg_export("keras_gradreg.semi_supervised.SemiSupervisedBatches")
class SemiSupervisedBatches(keras.utils.PyDataset):
    """Batches of `labeled_batch_size` labeled rows followed by
    `unlabeled_batch_size` unlabeled ones, as `(x, y, sample_weight)`.

    Two layouts (`passes`), both read by the label-free member:

    - "mixed": the model trains on every row in one pass. Labeled rows have
      their label and weight `labeled_weight`, by default
      `(labeled_batch_size + unlabeled_batch_size) / labeled_batch_size`:
      Keras's losses average over every row of a batch, so this makes the
      supervised loss the mean over the labeled rows, as in Miyato et al.,
      while the divergence averages over all rows (with weight 1, the
      supervised term would shrink with the share of labeled rows).
    - "separate" (Miyato et al.'s code): for a model built with
      `labeled_rows=labeled_batch_size`, which passes the labeled rows and
      the unlabeled ones through the network separately (each with its own
      batch-normalization statistics) and puts the divergence on the
      unlabeled rows only. The supervised loss is already the labeled
      rows' mean, so `labeled_weight` defaults to 1.

    Unlabeled rows have weight 0 and label 0 (a placeholder the weighted
    loss ignores). An epoch passes once
    over the unlabeled pool in a fresh random order; the labeled rows of
    each batch are drawn without replacement from the labeled set, reshuffled
    whenever it runs out, so every label is seen equally often. The batches
    form one stream: batch `i` of epoch `e` depends only on `(seed, e, i)`
    (`epoch` counts finished epochs; set it to `initial_epoch` when resuming
    a run and it sees the same batches).

    Args:
        x_labeled: labeled inputs, shape (n_labeled, ...).
        y_labeled: their labels, shape (n_labeled, ...).
        x_unlabeled: unlabeled inputs, the same per-example shape (the
            labeled images may be among them, as in the MNIST benchmark).
        labeled_batch_size: labeled rows per batch (at most n_labeled).
        unlabeled_batch_size: unlabeled rows per batch.
        labeled_weight: the labeled rows' sample weight (> 0); None for
            the labeled mean described above.
        passes: "mixed" or "separate", the layout above.
        steps_per_epoch: batches per epoch; default one pass over the
            unlabeled pool, `ceil(n_unlabeled / unlabeled_batch_size)`.
        seed: the seed of every shuffle.
        **kwargs: `PyDataset`'s `workers`, `use_multiprocessing`,
            `max_queue_size`.

    Raises:
        ValueError: for empty or mismatched arrays or a batch size < 1 or
            larger than what it draws from.
    """

    def __init__(
        self,
        x_labeled,
        y_labeled,
        x_unlabeled,
        labeled_batch_size: int = 32,
        unlabeled_batch_size: int = 128,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        labeled_weight: float | None = None,
        passes: str = "mixed",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if passes not in PASSES:
            raise ValueError(
                f"Argument `passes` must be one of {PASSES}. Received: "
                f"passes={passes!r}"
            )
        self.x_labeled = np.asarray(x_labeled)
        self.y_labeled = np.asarray(y_labeled)
        self.x_unlabeled = np.asarray(x_unlabeled)
        if len(self.x_labeled) != len(self.y_labeled) or not len(self.x_labeled):
            raise ValueError(
                "Arguments `x_labeled` and `y_labeled` must hold the same nonzero "
                f"number of examples. Received: {len(self.x_labeled)} inputs and "
                f"{len(self.y_labeled)} labels"
            )
        if self.x_unlabeled.shape[1:] != self.x_labeled.shape[1:]:
            raise ValueError(
                "Argument `x_unlabeled` must have the labeled inputs' per-example "
                f"shape {self.x_labeled.shape[1:]}. Received: x_unlabeled of shape "
                f"{self.x_unlabeled.shape}"
            )
        check_integer("labeled_batch_size", labeled_batch_size)
        check_integer("unlabeled_batch_size", unlabeled_batch_size)
        if labeled_batch_size > len(self.x_labeled):
            raise ValueError(
                f"Argument `labeled_batch_size` exceeds the {len(self.x_labeled)} "
                f"labeled examples. Received: labeled_batch_size={labeled_batch_size}"
            )
        if unlabeled_batch_size > len(self.x_unlabeled):
            raise ValueError(
                f"Argument `unlabeled_batch_size` exceeds the {len(self.x_unlabeled)} "
                "unlabeled examples. Received: "
                f"unlabeled_batch_size={unlabeled_batch_size}"
            )
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(len(self.x_unlabeled) / unlabeled_batch_size)
        check_integer("steps_per_epoch", steps_per_epoch)
        if labeled_weight is None and passes == "separate":
            labeled_weight = 1.0
        elif labeled_weight is None:
            labeled_weight = (labeled_batch_size + unlabeled_batch_size) / (
                labeled_batch_size
            )
        if not labeled_weight > 0:
            raise ValueError(
                "Argument `labeled_weight` must be > 0 (or None). Received: "
                f"labeled_weight={labeled_weight}"
            )
        self.labeled_weight = float(labeled_weight)
        self.passes = passes
        self.labeled_batch_size = int(labeled_batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.seed = seed
        self.epoch = 0
        self._orders = {}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def on_epoch_end(self):
        self.epoch += 1

    def _order(self, kind: int, n: int, cycle: int) -> np.ndarray:
        key = (kind, cycle)
        if key not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            rng = np.random.default_rng([self.seed, kind, cycle])
            self._orders[key] = rng.permutation(n)
        return self._orders[key]

    def _take(self, kind: int, n: int, size: int, start: int) -> np.ndarray:
        """Rows `start .. start + size` of an endless stream of shuffled
        passes over `n` examples (pass c in the order seeded by c)."""
        rows = []
        while size:
            cycle, offset = divmod(start, n)
            part = self._order(kind, n, cycle)[offset : offset + size]
            rows.append(part)
            size -= len(part)
            start += len(part)
        return np.concatenate(rows)

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(f"Batch {index} of {self.steps_per_epoch}")
        step = self.epoch * self.steps_per_epoch + index
        labeled = self._take(
            0,
            len(self.x_labeled),
            self.labeled_batch_size,
            step * self.labeled_batch_size,
        )
        unlabeled = self._take(
            1,
            len(self.x_unlabeled),
            self.unlabeled_batch_size,
            step * self.unlabeled_batch_size,
        )
        x = np.concatenate([self.x_labeled[labeled], self.x_unlabeled[unlabeled]])
        y_unlabeled = np.zeros(
            (len(unlabeled),) + self.y_labeled.shape[1:], self.y_labeled.dtype
        )
        y = np.concatenate([self.y_labeled[labeled], y_unlabeled])
        weight = np.concatenate(
            [
                np.full(len(labeled), self.labeled_weight, "float32"),
                np.zeros(len(unlabeled), "float32"),
            ]
        )
        return x, y, weight
