"""LLR: local linearity regularization, the loss kept close to its
first-order expansion inside the ball."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number
from keras_gradreg.src.family import multistep
from keras_gradreg.src.family.forms.base import Form
from keras_gradreg.src.family.norms import per_row


def _dot(deltas, gradients):
    """`delta_i . g_i` per example, over every regularized input."""
    return ops.sum(multistep.flatten(deltas) * multistep.flatten(gradients), axis=-1)


@keras_gradreg_export("keras_gradreg.forms.LLR")
class LLR(Form):
    """`L(x) + weight * gamma(x) + gradient_weight * |delta* . g(x)|`.

    Local linearity regularization (Qin, Martens, Gowal, Krishnan,
    Dvijotham, Fawzi, De, Stanforth & Kohli, NeurIPS 2019). The
    first-order expansion `L(x + delta) ~ L(x) + delta . g(x)` is what the
    family's penalty trusts; LLR penalizes how far the loss strays from it
    inside the ball,

        gamma(x) = max_{||delta||_p <= sigma} |L(x + delta) - L(x) - delta . g(x)|,

    and, at the maximizer `delta*`, the first-order change itself,
    `|delta* . g(x)|`. Each example's objective is

        L(x) + weight * |L(x + d) - L(x) - d . g(x)| + gradient_weight * |d . g(x)|

    with `d = delta*` a constant, found by `steps` steps of projected
    steepest ascent on `|L(x + d) - L(x) - d . g(x)|` (weights fixed;
    the `Multistep` form's ascent) from a random point of the ball (the
    residual's gradient vanishes at 0). Every other factor is
    differentiated with respect to the weights: `L(x)`, `L(x + d)` and
    `g(x)` (double backpropagation). An ascent step costs three passes
    (the residual's sign, then its gradient); `adv_loss` logs the mean
    residual `gamma`. `alpha` does not apply: the weights weigh the terms.

    Args:
        weight: lambda, the weight of the residual, >= 0 (the paper: 4 on
            CIFAR-10 at linf 8/255).
        gradient_weight: mu, the weight of `|delta* . g(x)|`, >= 0 (the
            paper: 3 there).
        steps: ascent steps, >= 1.
        step_size: one step's length in the norm, > 0; default
            `2.5 * sigma / steps`.

    Examples:
        >>> LLR(weight=4.0, gradient_weight=3.0).steps
        10
    """

    name = "llr"
    second_order = True
    uses_clean_outputs = True

    def __init__(
        self,
        weight: float = 4.0,
        gradient_weight: float = 3.0,
        steps: int = 10,
        step_size: float | None = None,
    ):
        self.weight = check_number("weight", weight, 0.0, finite=True)
        self.gradient_weight = check_number(
            "gradient_weight", gradient_weight, 0.0, finite=True
        )
        self.steps = check_integer("steps", steps)
        self.step_size = multistep.check_step_size(step_size)

    def terms(self, context):
        reg = context.regularizer
        clean = context.example_losses()
        gradients = context.raw_gradients
        fixed_clean = ops.stop_gradient(clean)
        fixed_gradients = [ops.stop_gradient(g) for g in gradients]

        def residual_gradient(deltas):
            """The input gradient of `|L(x + d) - L(x) - d . g|`, per example."""
            moved = ops.stop_gradient(context.perturbed_loss(deltas, per_example=True))
            residual = moved - fixed_clean - _dot(deltas, fixed_gradients)
            sign = ops.stop_gradient(ops.sign(residual))
            signed = context.input_gradient(
                deltas,
                output_fn=lambda outputs: ops.sum(
                    sign * context.example_losses(outputs)
                ),
            )
            signed_clean = [
                g * per_row(ops.cast(sign, g.dtype), g) for g in fixed_gradients
            ]
            return [a - b for a, b in zip(signed, signed_clean)]

        deltas = multistep.maximize(
            residual_gradient,
            None,
            context.selection.leaves,
            norm=reg.norm,
            sigma=context.sigma,
            steps=self.steps,
            step_size=self.step_size,
            input_range=reg.input_range,
            start=context.start,
            weights=context.weights,
        )
        linear = _dot(deltas, gradients)
        moved = context.perturbed_loss(deltas, per_example=True)
        residual = ops.abs(moved - clean - linear)
        gamma = context.batch_mean(residual)
        total = (
            context.clean_loss
            + self.weight * gamma
            + self.gradient_weight * context.batch_mean(ops.abs(linear))
        )
        return total, gamma

    def start_norm(self, norm):
        return norm

    def check(self, regularizer) -> None:
        if regularizer.alpha != 0.0:
            raise ValueError(
                "LLR weighs its terms with `weight` and `gradient_weight`; "
                f"`alpha` does not apply. Received: alpha={regularizer.alpha}"
            )

    def get_config(self) -> dict:
        return {
            "weight": self.weight,
            "gradient_weight": self.gradient_weight,
            "steps": self.steps,
            "step_size": self.step_size,
        }
