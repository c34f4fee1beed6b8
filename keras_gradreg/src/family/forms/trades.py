"""TRADES: the clean loss plus the worst-case divergence of the
prediction inside the ball."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number
from keras_gradreg.src.family import multistep
from keras_gradreg.src.family.forms.base import Form


@keras_gradreg_export("keras_gradreg.forms.TRADES")
class TRADES(Form):
    """`L(x) + beta * max_{||r||_p <= sigma} KL(p(x) || p(x + r))`.

    TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, ICML 2019) splits
    the robust error into the natural error, trained by the clean loss,
    and the boundary error, trained by the divergence of the prediction
    at the worst point of the ball from the clean one; `beta` trades the
    two. The inner maximum is taken by `steps` steps of projected steepest
    ascent on the divergence (weights and p(x) held constant; the
    `Multistep` form's ascent) from `x + xi u`, u a random point of the
    unit ball (the divergence has zero gradient at r = 0). The last iterate
    enters as a constant, and the divergence is differentiated through
    both p(x) and p(x + r).

    This is what separates it from the label-free member (`Virtual`),
    which holds p(x) constant, takes the worst case by power iteration,
    and adds no alpha-weighted loss at the moved point: TRADES's gradient
    also pulls the clean prediction towards the moved one. The divergence
    is the mean over the rows; `adv_loss` logs it. `alpha` does not apply
    (`beta` weighs the terms).

    Args:
        beta: the weight of the divergence, >= 0 (the paper: 6 on
            CIFAR-10 and MNIST).
        steps: ascent steps, >= 1 (the paper: 10 on CIFAR-10, 40 on MNIST).
        step_size: one step's length in the norm, > 0; default
            `2.5 * sigma / steps` (the paper: 0.007 at sigma 0.031 with 10
            steps, 0.01 at 0.3 with 40).
        xi: the random start's radius in input units, > 0 (the paper
            draws `0.001 N(0, 1)` per coordinate).

    Examples:
        >>> TRADES(beta=6.0, steps=10).beta
        6.0
    """

    name = "trades"
    uses_clean_outputs = True

    def __init__(
        self,
        beta: float = 6.0,
        steps: int = 10,
        step_size: float | None = None,
        xi: float = 1e-3,
    ):
        self.beta = check_number("beta", beta, 0.0, finite=True)
        self.steps = check_integer("steps", steps)
        self.step_size = multistep.check_step_size(step_size)
        self.xi = check_number("xi", xi, 0.0, exclusive=True, finite=True)

    def terms(self, context):
        reg, sigma = context.regularizer, context.sigma
        clean = context.probabilities()
        constant = ops.stop_gradient(clean)
        # maximize scales its start by sigma: r_0 = xi u.
        start = [t * ops.cast(self.xi / sigma, t.dtype) for t in context.start]
        deltas = multistep.maximize(
            lambda d: context.input_gradient(d, constant),
            context.raw_gradients,
            context.selection.leaves,
            norm=reg.norm,
            sigma=sigma,
            steps=self.steps,
            step_size=self.step_size,
            input_range=reg.input_range,
            start=start,
            weights=context.weights,
        )
        divergence = context.perturbed_loss(deltas, clean)
        return context.clean_loss + self.beta * divergence, divergence

    def start_norm(self, norm):
        return norm

    def check(self, regularizer) -> None:
        if regularizer.alpha != 0.0:
            raise ValueError(
                "TRADES weighs the clean loss and the divergence with `beta`; "
                f"`alpha` does not apply. Received: alpha={regularizer.alpha}"
            )

    def get_config(self) -> dict:
        return {
            "beta": self.beta,
            "steps": self.steps,
            "step_size": self.step_size,
            "xi": self.xi,
        }
