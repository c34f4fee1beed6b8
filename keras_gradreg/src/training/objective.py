"""The family's training objective, written once in `keras.ops`.

The per-backend train steps in `keras_gradreg.backend` own differentiation
(tapes, `jax.grad`, `torch.autograd.grad`); everything they share lives here:
the compiled loss, and how the clean loss, the input gradient and the
perturbed loss combine into the objective. Which inputs are differentiated,
and their feature masks, is `keras_gradreg.inputs`.

Losses follow Keras's default reduction, "sum_over_batch_size": a batch's
loss is `(1/B) sum_i w_i L_i`. The input gradient of one example is taken
from `B` times the *unweighted* batch loss, `sum_i L_i`, so that
`g_i = dL_i/dx_i` exactly (the gradient of the batch mean would be 1/B too
small), and the penalty is the per-example weighted mean
`(1/B) sum_i w_i ||g_i||_q`, consistent with the loss.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import keras
from keras import ops

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.family import inputs, multistep, virtual
from keras_gradreg.src.family.forms.base import FormContext, weighted_batch_mean  # noqa: F401
from keras_gradreg.src.family.norms import per_example_norm
from keras_gradreg.src.keras_compat import (
    scale_loss_for_distribution,  # noqa: F401 - used by the backends
    unscale_loss_for_distribution,
)
from keras_gradreg.src.training import crossentropy


def first_leaf(x):
    return next(t for t in keras.tree.flatten(x) if t is not None)


def batch_size(x):
    """The (dynamic) number of examples in `x`, as a float32 scalar."""
    return ops.cast(ops.shape(first_leaf(x))[0], "float32")


def compiled_loss(model, y, y_pred, sample_weight):
    """The model's compiled loss, undoing tf.distribute's replica scaling so
    that every term of the objective is a per-replica batch mean.

    A cross-entropy of softmax probabilities is differentiated past Keras's
    clip, so that a confidently classified example keeps its input
    gradient (`crossentropy.through_the_clip`; with the higher probability
    floor where the penalty form differentiates that gradient again)."""
    value = unscale_loss_for_distribution(
        _keras_compat.compiled_loss(model, y, y_pred, sample_weight)
    )
    sparse = _clipped_crossentropy(model, y_pred, sample_weight)
    if sparse is None:
        return value
    regularizer = getattr(model, "regularizer", None)
    twice = regularizer is not None and needs_second_order(regularizer)
    floor = crossentropy.SECOND_ORDER_FLOOR if twice else crossentropy.FIRST_ORDER_FLOOR
    return crossentropy.through_the_clip(
        value, sparse, y, y_pred, sample_weight, floor=floor
    )


def _clipped_crossentropy(model, y_pred, sample_weight):
    """`crossentropy.probability_crossentropy` of the compiled loss for one
    `(B, classes)` output with per-example weights or none; None otherwise."""
    if not ops.is_tensor(y_pred):
        return None
    if len(ops.shape(y_pred)) != 2:
        return None
    if sample_weight is not None and len(ops.shape(sample_weight)) > 1:
        return None
    return crossentropy.probability_crossentropy(getattr(model, "loss", None))


def clean_losses(model, y, y_pred, sample_weight):
    """Returns `(weighted, summed)`: the batch loss with sample weights, and
    `sum_i L_i` without them, whose input gradient is each example's own
    dL_i/dx_i."""
    unweighted = compiled_loss(model, y, y_pred, None)
    weighted = (
        unweighted
        if sample_weight is None
        else compiled_loss(model, y, y_pred, sample_weight)
    )
    return weighted, _summed(unweighted, y_pred)


def summed_loss(model, y, y_pred):
    """`sum_i L_i` without sample weights (see `clean_losses`)."""
    return _summed(compiled_loss(model, y, y_pred, None), y_pred)


def outputs_are_logits(model) -> bool:
    """Whether the compiled loss reads the outputs as logits
    (`from_logits=True`)."""
    loss = getattr(model, "loss", None)
    config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
    return bool(config.get("from_logits", False))


def clean_probabilities(model, y_pred):
    """The class probabilities of the clean outputs (their softmax when the
    loss takes logits), differentiable where `y_pred` is."""
    return ops.softmax(y_pred, axis=-1) if outputs_are_logits(model) else y_pred


def clean_output_readers(model, y, y_pred) -> dict:
    """The `FormContext` callables that read the clean outputs and labels:
    `probabilities`, `example_losses` (each of the clean outputs or of given
    ones, differentiable where they are) and `labels`."""
    return {
        "probabilities": lambda outputs=None: clean_probabilities(
            model, y_pred if outputs is None else outputs
        ),
        "example_losses": lambda outputs=None: example_losses(
            model, y, y_pred if outputs is None else outputs
        ),
        "labels": lambda: one_hot_labels(y, y_pred),
    }


def one_hot_labels(y, y_pred):
    """The labels as rows shaped like the outputs `y_pred` (batch,
    classes): `y` itself when it holds one row per example (one-hot or
    soft labels), else the one-hot encoding of its integer labels."""
    classes = ops.shape(y_pred)[-1]
    shape = ops.shape(y)
    if len(shape) == len(ops.shape(y_pred)) and shape[-1] == classes != 1:
        return ops.cast(y, y_pred.dtype)
    labels = ops.cast(ops.reshape(y, (-1,)), "int32")
    return ops.one_hot(labels, classes, dtype=y_pred.dtype)


def virtual_target(model, y_pred):
    """The label-free member's constant target p(x), the clean class
    probabilities, or None for the other members."""
    if not is_label_free(model.regularizer):
        return None
    return ops.stop_gradient(clean_probabilities(model, y_pred))


def example_losses(model, y, y_pred):
    """Each example's own loss `L_i`, unweighted, shape (B,): the function
    `compile()` received, unreduced (its mean over any further axes).

    Raises:
        ValueError: if the model was compiled with several losses or none.
    """
    loss = getattr(model, "loss", None)
    if isinstance(loss, keras.losses.Loss):
        values = loss.call(y, y_pred)
    elif isinstance(loss, str) or callable(loss):
        values = keras.losses.get(loss)(y, y_pred)
    else:
        raise ValueError(
            "This form needs each example's loss: compile the model with one "
            f"loss (a name, a `keras.losses.Loss` or a function). Received: "
            f"loss={loss!r}"
        )
    values = ops.reshape(values, (ops.shape(values)[0], -1))
    return ops.mean(values, axis=1)


def adversarial_loss(
    model, y, y_adv, sample_weight, target=None, per_example=False, output_fn=None
):
    """The loss at the moved inputs: the compiled loss, or with a `target`
    (class probabilities) the mean KL divergence `KL(target || p(x + r))`
    over every row, labeled or not, differentiated through the target too
    unless it is a constant (the label-free member's is; TRADES's is not).
    With `per_example`, each example's unweighted loss (`example_losses`);
    with `output_fn`, `output_fn(outputs)` of the moved outputs."""
    if output_fn is not None:
        return output_fn(y_adv)
    if per_example:
        return example_losses(model, y, y_adv)
    if target is None:
        return compiled_loss(model, y, y_adv, sample_weight)
    return ops.mean(virtual.kl_divergence(target, clean_probabilities(model, y_adv)))


def ascent_loss(model, y, y_adv, target=None, output_fn=None):
    """The summed per-example quantity whose input gradient the ascent and
    power-iteration steps follow: `output_fn(y_adv)` when given, else the
    summed loss (see `summed_loss`) or, with a `target`, the summed KL
    divergence from it."""
    if output_fn is not None:
        return output_fn(y_adv)
    if target is None:
        return summed_loss(model, y, y_adv)
    return ops.sum(virtual.kl_divergence(target, clean_probabilities(model, y_adv)))


def _summed(unweighted, y_pred):
    return unweighted * ops.cast(batch_size(y_pred), unweighted.dtype)


def regularization_losses(losses):
    """Sum of layer/weight regularization losses (0.0 when there are none)."""
    losses = [ops.cast(loss, "float32") for loss in losses]
    return ops.sum(ops.stack(losses)) if losses else ops.zeros((), "float32")


class Terms(NamedTuple):
    """The parts of one batch's objective (all per-replica batch means)."""

    total: object  # what the optimizer minimizes (before regularization losses)
    clean_loss: object
    adv_loss: object
    grad_norm: object  # mean_i ||g_i||_q


def family_objective(
    regularizer,
    clean_loss,
    gradients,
    sample_weight,
    perturbed_loss: Callable,
    sigma=None,
    *,
    input_gradient: Callable | None = None,
    selection: inputs.InputSelection | None = None,
    start=None,
    target=None,
    probabilities: Callable | None = None,
    example_losses: Callable | None = None,
    labels: Callable | None = None,
) -> Terms:
    """Combines the clean loss and the input gradient into the objective:
    what every form shares (the feature mask, the logged gradient norm,
    sigma = 0 as plain training), then the form's own terms
    (`keras_gradreg.forms.Form.terms`).

    Args:
        regularizer: the `GradientRegularizer`: the family member and form.
        clean_loss: the weighted clean batch loss `(1/B) sum_i w_i L(x_i)`,
            or None when the step takes no clean pass (`needs_clean_pass`).
        gradients: list of per-example input gradients `dL_i/dx_i`;
            differentiable with respect to the weights for a second-order
            form.
        sample_weight: per-example weights or None.
        perturbed_loss: `(delta, target=None, *, per_example=False) ->
            (1/B) sum_i w_i L(clip(x_i + delta_i))`, one more forward pass
            (with `per_example`, each example's unweighted loss there).
        sigma: the radius as a tensor or variable (GradRegModel passes the
            variable it keeps, so sigma can change during `fit` without a
            retrace); default `regularizer.sigma`.
        input_gradient: `(delta, target=None, *, differentiable=False,
            output_fn=None) -> dL_i/dx` at `clip(x_i + delta_i)` (see
            `keras_gradreg.forms.FormContext`).
        selection: the regularized inputs (for `feature_mask` and the
            multistep form).
        start: the random start the form asked for (`Form.start_norm`), or
            None.
        target: the label-free member: the clean probabilities p(x).
        probabilities: `(outputs=None) -> p`, the class probabilities of
            the clean outputs (differentiable with respect to the weights
            when the clean pass is: `keras_gradreg.forms.Form.uses_clean_outputs`)
            or of `outputs`.
        example_losses: `(outputs=None) -> L_i`, each example's unweighted
            loss of the clean outputs or of `outputs`.
        labels: `() -> y`, the labels as one-hot rows shaped like the
            outputs (`one_hot_labels`).

    Returns:
        `Terms(total, clean_loss, adv_loss, grad_norm)`.
    """
    reg = regularizer
    weights = None if selection is None else inputs.feature_weights(reg, selection)
    raw_gradients, norms, first = gradients, None, []
    if gradients is None:  # the form reads none (`Form.uses_clean_gradients`)
        input_gradient = _keeping_first(input_gradient, first, selection, reg)
    else:
        if weights is not None:
            gradients = [g * w for g, w in zip(gradients, weights)]
        norms = per_example_norm(gradients, reg.dual_order)
        if not reg.active:
            return Terms(clean_loss, clean_loss, clean_loss, _mean_norm(norms))
    dtype = keras.backend.floatx() if clean_loss is None else clean_loss.dtype
    sigma = ops.cast(reg.sigma if sigma is None else sigma, dtype)
    context = FormContext(
        regularizer=reg,
        sigma=sigma,
        clean_loss=clean_loss,
        gradients=gradients,
        raw_gradients=raw_gradients,
        norms=norms,
        weights=weights,
        sample_weight=sample_weight,
        perturbed_loss=perturbed_loss,
        input_gradient=input_gradient,
        selection=selection,
        start=start,
        target=target,
        probabilities=probabilities,
        example_losses=example_losses,
        labels=labels,
    )
    total, adv_loss = reg.form.terms(context)
    if norms is None:  # the loss gradient at the form's first moved point
        gradients = first[0] if weights is None else inputs.weighted(first[0], weights)
        norms = per_example_norm(gradients, reg.dual_order)
    return Terms(total, clean_loss, adv_loss, _mean_norm(norms))


def _mean_norm(norms):
    return ops.mean(ops.stop_gradient(norms))


def _keeping_first(input_gradient, first, selection, regularizer):
    """`input_gradient` that keeps the first gradient it returns in `first`,
    after checking that every regularized input has one (the check the
    clean pass makes otherwise)."""

    def wrapped(*args, **kwargs):
        gradients = input_gradient(*args, **kwargs)
        if not first:
            inputs.check_input_gradients(
                gradients, selection, regularizer.inputs_to_regularize
            )
            first.append(gradients)
        return gradients

    return wrapped


def needs_clean_gradients(regularizer) -> bool:
    """Whether the step takes dL/dx at the clean inputs: plain training
    (for the logged `grad_norm`) and every active form but those that
    start from a random point (`Form.uses_clean_gradients`)."""
    return not regularizer.active or regularizer.form.uses_clean_gradients


def needs_clean_pass(regularizer) -> bool:
    """Whether the step runs the forward pass at the clean inputs: plain
    training and every active form but those that read neither the clean
    loss nor dL/dx there and log on the perturbed pass
    (`Form.needs_clean_pass`)."""
    reg = regularizer
    return not reg.active or reg.form.needs_clean_pass(reg.alpha)


def needs_clean_weight_gradient(regularizer) -> bool:
    """Whether the objective contains the clean loss, so that the clean
    pass must be recorded for the weight gradient (not for the perturb and
    multistep forms with alpha = 0: `Form.uses_clean_loss`)."""
    reg = regularizer
    return not reg.active or reg.form.uses_clean_loss(reg.alpha)


def shares_clean_backward(regularizer, sample_weight, scale):
    """Whether one backward pass of the clean loss can give both dL/dx and
    the clean loss's weight gradient.

    The first-order forms with the clean loss in the objective (alpha > 0,
    finite differences, sigma = 0) need both. Without sample weights the
    weighted batch loss is `(1/B) sum_i L_i`, the summed loss over B, so
    the backward of `sum_i L_i` with respect to the weights and the inputs
    together gives `g_i` and, divided by B, the clean weight gradient: the
    clean pass's activation gradients are computed once, not once for each.
    The train steps then differentiate the objective with the clean loss as
    an input of its own and add its derivative times that weight gradient
    (`add_scaled`). With sample weights the two losses differ row by row,
    and loss scaling (`scale`, mixed precision) keeps its own path; both
    backpropagate twice, as do the forms that differentiate the clean
    outputs themselves (`Form.uses_clean_outputs`). So do the backends when
    the clean pass adds layer losses (an activity regularizer's input gradient would enter g_i).
    """
    return (
        needs_clean_weight_gradient(regularizer)
        and needs_clean_gradients(regularizer)
        and not needs_second_order(regularizer)
        and not (regularizer.active and regularizer.form.uses_clean_outputs)
        and all(w is None for w in keras.tree.flatten(sample_weight))
        and scale is None
    )


def add_scaled(gradients, coefficient, summed_gradients, x, multiply_add=None):
    """`g_k + (coefficient / B) * m_k` for each pair (a None counts as zero):
    the weight gradient of an objective with the clean loss entered as a
    separate input, `coefficient` being the objective's derivative with
    respect to it and `m_k` the weight gradient of `sum_i L_i` over the B
    rows of `x`, so `m_k / B` is the clean loss's (see
    `shares_clean_backward`). The scalar is divided, not the weight-sized
    gradients: one multiply-add per weight.

    Args:
        gradients: the objective's weight gradients, the clean loss held
            constant.
        coefficient: d objective / d clean loss (a scalar), or None when the
            objective does not reach the clean loss.
        summed_gradients: the weight gradients of `sum_i L_i`.
        x: the batch's inputs (for B).
        multiply_add: `(g, m, scale) -> g + scale * m` for one pair with `m`
            not None (`g` may be None); out of place by default, the torch
            step passes an in-place one.

    Returns:
        The objective's weight gradients, a list.
    """
    if coefficient is None:  # the objective does not reach the clean loss
        return list(gradients)
    scale = coefficient / ops.cast(batch_size(x), coefficient.dtype)
    multiply_add = multiply_add or _multiply_add
    return [
        g if m is None else multiply_add(g, m, scale)
        for g, m in zip(gradients, summed_gradients)
    ]


def _multiply_add(g, m, scale):
    m = ops.cast(scale, m.dtype) * m
    return m if g is None else g + ops.cast(m, g.dtype)


def needs_random_start(regularizer) -> bool:
    """Whether the step draws a random start for the form
    (`Form.start_norm`: the multistep form with a random start, the
    label-free member's power iteration)."""
    reg = regularizer
    return reg.active and reg.form.start_norm(reg.norm) is not None


def random_start(model, selection):
    """The form's random start in the unit ball of `Form.start_norm` (drawn
    from the model's `perturbation_seed`), or None."""
    reg = model.regularizer
    if not needs_random_start(reg):
        return None
    norm = reg.form.start_norm(reg.norm)
    return multistep.random_unit_start(selection.leaves, norm, model.perturbation_seed)


def replays_noise(regularizer) -> bool:
    """Whether the step's later passes replay the random draws (dropout
    masks) of the clean pass (`Form.replays_noise`; docs/family.md, "One
    noise draw per step")."""
    return regularizer.form.replays_noise


def needs_second_order(regularizer) -> bool:
    """Whether the step backpropagates through dL/dx (`Form.second_order`:
    the penalty form)."""
    return regularizer.active and regularizer.form.second_order


def is_label_free(regularizer) -> bool:
    """Whether the active member trains on a divergence from p(x) rather
    than the loss (`Form.label_free`)."""
    return regularizer.active and regularizer.form.label_free
