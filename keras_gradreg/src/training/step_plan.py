"""One train step's plan, built once per trace and shared by the three
backends: which rows and inputs the step trains on, and what it must
compute for the member's form. `keras_gradreg.backend` supplies only the
differentiation."""

from __future__ import annotations

from typing import NamedTuple

import keras

from keras_gradreg.src.family import inputs
from keras_gradreg.src.training import objective


class StepPlan(NamedTuple):
    """What one train step computes.

    Attributes:
        regularizer: the model's `GradientRegularizer`.
        x, y, sample_weight: the rows the loss is taken on (the labeled
            rows of a semi-supervised batch).
        unlabeled: the label-free member's own rows (`labeled_rows`), or
            None.
        selection: the regularized inputs of `x`.
        clean_pass: whether the step runs the forward pass at the clean
            inputs (`Form.needs_clean_pass`); when not, the compiled
            metrics read the outputs of the perturbed pass.
        record_clean: whether the objective contains the clean loss, so
            the clean pass is differentiated for the weights
            (`Form.uses_clean_loss`).
        clean_gradients: whether the clean pass is differentiated for
            dL/dx (`Form.uses_clean_gradients`); when not, the backends
            hand the objective None for the gradients.
        second_order: whether the input gradient is differentiated again
            (`Form.second_order`).
        random_start: whether the step draws a random start
            (`Form.start_norm`).
    """

    regularizer: object
    x: object
    y: object
    sample_weight: object
    unlabeled: object
    selection: inputs.InputSelection
    clean_pass: bool
    record_clean: bool
    clean_gradients: bool
    second_order: bool
    random_start: bool

    def moved(self, selection=None):
        """`(moved_x, moved)`: the inputs the perturbed passes move and their
        selection (`selection`, default the plan's, for the batch itself)."""
        return moved_inputs(
            self.regularizer, self.x, selection or self.selection, self.unlabeled
        )


def plan_step(model, data, prepare_leaves=None) -> StepPlan:
    """The plan of one train step of `model` on `data`.

    Args:
        model: a `GradRegModel`.
        data: the batch, `(x, y, sample_weight)` as Keras hands it over.
        prepare_leaves: optional `leaves -> leaves` applied to the
            regularized inputs before they enter the batch (torch marks
            them as requiring a gradient).

    Returns:
        A `StepPlan`.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    reg = model.regularizer
    x, y, sample_weight, unlabeled = split_labeled_rows(reg, x, y, sample_weight)
    selection = inputs.select_inputs(x, reg.inputs_to_regularize)
    if prepare_leaves is not None:
        selection = selection._replace(leaves=prepare_leaves(selection.leaves))
        x = selection.rebuild(x, selection.leaves)
    return StepPlan(
        regularizer=reg,
        x=x,
        y=y,
        sample_weight=sample_weight,
        unlabeled=unlabeled,
        selection=selection,
        clean_pass=objective.needs_clean_pass(reg),
        record_clean=objective.needs_clean_weight_gradient(reg),
        clean_gradients=objective.needs_clean_gradients(reg),
        second_order=objective.needs_second_order(reg),
        random_start=objective.needs_random_start(reg),
    )


def split_labeled_rows(regularizer, x, y, sample_weight):
    """Separates a semi-supervised batch (`labeled_rows`, k): returns
    `(x[:k], y[:k], sample_weight[:k], unlabeled)` with `unlabeled = x[k:]`
    for the active label-free member's passes (None otherwise: the other
    members ignore those rows); without `labeled_rows`,
    `(x, y, sample_weight, None)`.

    Raises:
        ValueError: for a batch of at most k rows (its shape known).
    """
    rows = regularizer.labeled_rows
    if rows is None:
        return x, y, sample_weight, None
    size = objective.first_leaf(x).shape[0]
    if size is not None and size <= rows:
        raise ValueError(
            f"A training batch of {size} rows holds no unlabeled row after its "
            f"`labeled_rows` labeled ones. Received: labeled_rows={rows}"
        )
    first, rest = slice(None, rows), slice(rows, None)

    def rows_of(part, index):
        return keras.tree.map_structure(lambda t: None if t is None else t[index], part)

    labeled = [rows_of(part, first) for part in (x, y, sample_weight)]
    unlabeled = rows_of(x, rest) if objective.is_label_free(regularizer) else None
    return (*labeled, unlabeled)


def moved_inputs(regularizer, x, selection, unlabeled):
    """The inputs the perturbed passes move, and their selection: the
    unlabeled rows of a semi-supervised batch (`split_labeled_rows`), else
    the batch itself."""
    if unlabeled is None:
        return x, selection
    return unlabeled, inputs.select_inputs(unlabeled, regularizer.inputs_to_regularize)
