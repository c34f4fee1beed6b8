"""GradAlign: FGSM training that keeps the input gradient aligned across
the ball."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_number
from keras_gradreg.src.family import inputs
from keras_gradreg.src.family.forms.base import PerturbingForm
from keras_gradreg.src.family.multistep import flatten


def cosine_similarity(a, b, epsilon: float = 1e-8):
    """`a . b / (max(||a||_2, eps) max(||b||_2, eps))` per row of two
    `(batch, d)` tensors (zero for a zero row). The bound is taken under
    the square root, so that its derivative stays finite at a zero row
    (the square root's is infinite at 0: times the zero that `maximum`
    passes back, NaN)."""

    def length(t):
        return ops.sqrt(ops.maximum(ops.sum(t * t, axis=-1), epsilon**2))

    return ops.sum(a * b, axis=-1) / (length(a) * length(b))


@keras_gradreg_export("keras_gradreg.forms.GradAlign")
class GradAlign(PerturbingForm):
    """FGSM training plus `weight * (1 - cos(dL/dx(x), dL/dx(x + eta)))`.

    GradAlign (Andriushchenko & Flammarion, NeurIPS 2020). Single-step
    training overfits catastrophically when the loss stops being linear
    inside the ball: its worst case then differs from the first-order one
    FGSM trains on. The first sign is the input gradient turning inside
    the ball, so GradAlign trains FGSM's objective `L(x + r*)` (r* the
    first-order worst case of radius `step * sigma`, taken at x) with a
    term that keeps the gradient at x aligned with the gradient at a
    random point `x + eta` of the sigma-ball (uniform in the linf cube; see
    `Multistep` for the other norms' draws). Each example's
    objective is

        alpha L(x) + (1 - alpha) L(x + r*) + weight (1 - cos(g(x), g(x + eta)))

    with the cosine over all regularized inputs of the example (the
    feature mask applied to both gradients). As in Andriushchenko &
    Flammarion's code, `g(x)` is held constant and `g(x + eta)` is
    differentiated with respect to the weights (double backpropagation): a
    step costs about three times plain training's.

    Args:
        weight: lambda, the weight of the alignment term, >= 0. The
            authors grow its log linearly with the radius: at linf 8/255,
            0.2 on CIFAR-10 and 2.5 on SVHN; no published MNIST value
            (docs/family.md).
        step: the FGSM step's length over sigma (the paper: 1).
        share_noise: whether the passes draw the clean pass's dropout
            masks (see `Perturb`).

    Examples:
        >>> GradAlign(weight=0.2).weight
        0.2
    """

    name = "gradalign"
    second_order = True

    def __init__(self, weight: float = 0.2, step: float = 1.0, share_noise=True):
        self.weight = check_number("weight", weight, 0.0, finite=True)
        self.step = check_number("step", step, 0.0, exclusive=True, finite=True)
        super().__init__(share_noise)

    def terms(self, context):
        weights = context.weights
        deltas = context.worst_case(context.sigma * self.step)
        adv_loss = context.perturbed_loss(deltas)
        eta = inputs.weighted(
            [t * ops.cast(context.sigma, t.dtype) for t in context.start], weights
        )
        moved = context.input_gradient(eta, differentiable=True)
        clean = flatten([ops.stop_gradient(g) for g in context.gradients])
        cosine = cosine_similarity(clean, flatten(inputs.weighted(moved, weights)))
        alignment = context.batch_mean(1.0 - ops.cast(cosine, adv_loss.dtype))
        return context.mixed(adv_loss) + self.weight * alignment, adv_loss

    def start_norm(self, norm):
        return norm  # eta, uniform in the ball

    def get_config(self) -> dict:
        return {"weight": self.weight, "step": self.step, **super().get_config()}
