"""The finite-difference form: the penalty's directional derivative by
finite differences, first derivatives only."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_number
from keras_gradreg.src.family.forms.base import Form


@keras_gradreg_export("keras_gradreg.forms.FiniteDifference")
class FiniteDifference(Form):
    """`L_adv = L(x) + sigma * (L(x + h d) - L(x)) / h`, `d = r* / sigma`.

    The penalty `sigma ||g||_q` is the derivative of the loss along the
    worst-case direction d; here it is a finite difference of step h, with
    d held constant, so the weight gradient needs first derivatives only
    (and trains under `torch.compile`). As `h -> 0` it tends to the penalty
    form; at `h = sigma` it is the perturb form with alpha 0.

    Args:
        step: the finite-difference step h, > 0, in the inputs' units
            (0.1.0's `fd_step`).

    Examples:
        >>> FiniteDifference(step=0.05).step
        0.05
    """

    name = "finite_difference"
    aliases = {"fd_step": "step"}

    def __init__(self, step: float = 0.01):
        self.step = check_number("step", step, 0.0, exclusive=True, finite=True)

    def terms(self, context):
        h = self.step
        stepped = context.perturbed_loss(context.worst_case(h))
        penalty = (context.sigma / h) * (stepped - context.clean_loss)
        alpha = context.regularizer.alpha
        total = context.clean_loss + (1.0 - alpha) * penalty
        return total, context.clean_loss + penalty

    def get_config(self) -> dict:
        return {"step": self.step}
