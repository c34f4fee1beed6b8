"""The squared-norm penalty: input-gradient regularization as Drucker &
LeCun (1992) and Ross & Doshi-Velez (2018) train it."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family.forms.penalty import Penalty


@keras_gradreg_export("keras_gradreg.forms.SquaredPenalty")
class SquaredPenalty(Penalty):
    """`L_adv = L(x) + sigma * ||dL/dx||_q^2`, differentiated exactly.

    "Double backpropagation" (Drucker & LeCun, 1992) and the input-gradient
    regularization of Ross & Doshi-Velez (2018) penalize the squared norm
    of the input gradient; here `sigma` is its weight lambda and q is dual
    to the norm p (q = 2 for "l2"). Unlike the penalty form (`sigma *
    ||g||_q`, the first-order worst case of a sigma-ball), its gradient
    vanishes with g, so it pushes hardest on the examples with the largest
    input gradients. A step costs what the penalty form's does. Each
    example's objective is `L(x) + (1 - alpha) * sigma * ||g||_q^2`.

    Examples:
        >>> import keras_gradreg as kg
        >>> kg.GradientRegularizer(norm="l2", sigma=0.01, form="squared_penalty").form
        SquaredPenalty()
    """

    name = "squared_penalty"
    exponent = 2
