"""CURE: a penalty on the curvature of the loss along the worst-case
direction."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_number
from keras_gradreg.src.family import inputs
from keras_gradreg.src.family.forms.base import Form
from keras_gradreg.src.family.multistep import flatten


@keras_gradreg_export("keras_gradreg.forms.Curvature")
class Curvature(Form):
    """`L(x) + weight * ||dL/dx(x + r*) - dL/dx(x)||_2^2`, r* the first-order
    worst case of radius sigma: CURE.

    Curvature regularization (Moosavi-Dezfooli, Fawzi, Uesato & Frossard,
    CVPR 2019). A model is robust when its loss is nearly linear in a
    neighbourhood of the data, and the change of the input gradient over
    a step `z` is a finite-difference estimate of the Hessian along `z`:
    `dL/dx(x + z) - dL/dx(x) ~ H z`. CURE penalizes its squared length
    along the direction in which the loss grows fastest. Here `z` is the
    family's first-order worst case `r*` of radius sigma in the norm
    (held constant), and both gradients are differentiated with respect
    to the weights (double backpropagation). Each example's objective is

        L(x) + (1 - alpha) * weight * ||g(x + r*) - g(x)||_2^2

    with the feature mask applied to both gradients. CURE's own choice of
    `z`, `h sign(g) / ||sign(g)||_2`, is `norm="linf"` with
    `sigma = h / sqrt(d)` for d input coordinates. A step costs about
    three times plain training's. `adv_loss` logs `L(x) + weight * ||.||^2`.

    Args:
        weight: lambda, the weight of the curvature term, >= 0 (the paper:
            4 on CIFAR-10).

    Examples:
        >>> Curvature(weight=4.0).weight
        4.0
    """

    name = "curvature"
    second_order = True

    def __init__(self, weight: float = 4.0):
        self.weight = check_number("weight", weight, 0.0, finite=True)

    def terms(self, context):
        weights = context.weights
        moved = context.input_gradient(
            context.worst_case(context.sigma), differentiable=True
        )
        change = flatten(inputs.weighted(moved, weights)) - flatten(context.gradients)
        squared = ops.sum(change * change, axis=-1)
        curvature = self.weight * context.batch_mean(
            ops.cast(squared, context.clean_loss.dtype)
        )
        alpha = context.regularizer.alpha
        total = context.clean_loss + (1.0 - alpha) * curvature
        return total, context.clean_loss + curvature

    def get_config(self) -> dict:
        return {"weight": self.weight}
