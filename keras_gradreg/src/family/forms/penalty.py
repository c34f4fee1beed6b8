"""The penalty form: the family's first-order objective, differentiated
exactly."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family.forms.base import Form


@keras_gradreg_export("keras_gradreg.forms.Penalty")
class Penalty(Form):
    """`L_adv = L(x) + sigma * ||dL/dx||_q`, differentiated exactly.

    The first-order expansion of `max_{||r||_p <= sigma} L(x + r)`, with q
    dual to the norm p (`1/p + 1/q = 1`). The weight gradient of the
    penalty goes through the input gradient (double backpropagation,
    Drucker & LeCun 1992), so a step costs about two backward passes more
    than plain training. Each example's objective is
    `L(x) + (1 - alpha) * sigma * ||g||_q`.

    The form takes no arguments of its own; `form="penalty"` is its
    shorthand, and the default.

    Examples:
        >>> import keras_gradreg as kg
        >>> kg.GradientRegularizer(norm="l2", sigma=0.1, form=Penalty()).form
        Penalty()
    """

    name = "penalty"
    second_order = True
    #: The power of the gradient norm penalized.
    exponent = 1

    def terms(self, context):
        norms = context.norms if self.exponent == 1 else context.norms**self.exponent
        penalty = context.sigma * context.batch_mean(norms)
        alpha = context.regularizer.alpha
        total = context.clean_loss + (1.0 - alpha) * penalty
        return total, context.clean_loss + penalty

    @property
    def replays_noise(self) -> bool:
        return False  # one forward pass
