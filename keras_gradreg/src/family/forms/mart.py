"""MART: adversarial training that weighs the misclassified examples
more."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number
from keras_gradreg.src.family import multistep, virtual
from keras_gradreg.src.family.forms.base import Form


@keras_gradreg_export("keras_gradreg.forms.MART")
class MART(Form):
    """`(1/B) sum_i w_i [BCE(p(x_i + r_i), y_i)
    + beta KL(p(x_i) || p(x_i + r_i)) (1 - p_{y_i}(x_i))]`.

    MART (Wang, Zou, Yi, Bailey, Ma & Gu, ICLR 2020, "Improving
    adversarial robustness requires revisiting misclassified examples")
    trains on the PGD point `x + r` of the loss, like the `Multistep` form,
    with two changes. Its boosted cross-entropy adds a margin term that
    pushes down the strongest wrong class:
    `BCE(p, y) = L(x + r) - log(1 - max_{k != y} p_k)`, `L` the compiled
    loss (cross-entropy in the paper). It also adds the divergence of the
    moved prediction from the clean one, weighted per example by
    `1 - p_y(x)`, so that the examples the clean model gets wrong or barely
    right weigh most.

    r comes from `steps` steps of projected steepest ascent on the loss
    (weights held constant) from a random point of the ball, and enters as
    a constant. The objective is differentiated through p(x) and
    p(x + r). The margin's logarithm takes `1.0001 - max_k p_k`, as the
    reference code does; `adv_loss` logs the mean boosted cross-entropy.
    `alpha` does not apply (`beta` weighs the terms).

    Args:
        beta: the weight of the divergence, >= 0 (the paper: 6 on
            CIFAR-10 and MNIST).
        steps: ascent steps, >= 1 (the paper: 10 on CIFAR-10, 40 on MNIST).
        step_size: one step's length in the norm, > 0; default
            `2.5 * sigma / steps` (the paper: 0.007 at sigma 0.031).

    Examples:
        >>> MART(beta=6.0, steps=10).beta
        6.0
    """

    name = "mart"
    uses_clean_outputs = True

    def __init__(
        self, beta: float = 6.0, steps: int = 10, step_size: float | None = None
    ):
        self.beta = check_number("beta", beta, 0.0, finite=True)
        self.steps = check_integer("steps", steps)
        self.step_size = multistep.check_step_size(step_size)

    def terms(self, context):
        reg = context.regularizer
        deltas = multistep.maximize(
            context.input_gradient,
            context.raw_gradients,
            context.selection.leaves,
            norm=reg.norm,
            sigma=context.sigma,
            steps=self.steps,
            step_size=self.step_size,
            input_range=reg.input_range,
            start=context.start,
            weights=context.weights,
        )
        clean = context.probabilities()
        labels = context.labels()
        weight = 1.0 - ops.sum(clean * labels, axis=-1)

        def per_example(outputs):
            moved = context.probabilities(outputs)
            runner_up = ops.max(moved * (1.0 - labels), axis=-1)
            boosted = context.example_losses(outputs) - ops.log(1.0001 - runner_up)
            divergence = virtual.kl_divergence(clean, moved)
            return boosted, boosted + self.beta * divergence * weight

        boosted, total = context.perturbed_loss(deltas, output_fn=per_example)
        return context.batch_mean(total), context.batch_mean(boosted)

    def start_norm(self, norm):
        return norm

    @property
    def uses_clean_gradients(self) -> bool:
        return False  # the ascent starts from a random point

    def check(self, regularizer) -> None:
        if regularizer.alpha != 0.0:
            raise ValueError(
                "MART weighs its terms with `beta`; `alpha` does not apply. "
                f"Received: alpha={regularizer.alpha}"
            )

    def get_config(self) -> dict:
        return {"beta": self.beta, "steps": self.steps, "step_size": self.step_size}
