"""Jacobian regularization: the Frobenius norm of the input-output
Jacobian, by random projections."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer
from keras_gradreg.src.family import inputs
from keras_gradreg.src.family.forms.base import Form
from keras_gradreg.src.family.multistep import flatten


@keras_gradreg_export("keras_gradreg.forms.Jacobian")
class Jacobian(Form):
    """`L(x) + (sigma / 2) * ||J(x)||_F^2`, `J = d outputs / dx`.

    Jacobian regularization (Hoffman, Roberts & Yaida, 2019): the squared
    Frobenius norm of the Jacobian of the model's outputs (the logits, for
    a loss with `from_logits=True`) with respect to its inputs bounds how
    far any small perturbation moves them, whatever the label. With C
    outputs and v uniform on the unit sphere of R^C, `||J||_F^2 = C E_v
    ||v^T J||^2`, and one `v^T J` costs one backward pass, so the penalty
    is estimated from `projections` random directions per example:

        ||J||_F^2 ~ (C / k) sum_{j=1..k} ||v_j^T J||_2^2

    (`projections=None`: the exact sum over the C outputs, C passes). Each
    projected Jacobian is differentiated with respect to the weights
    (double backpropagation). Each example's objective is `L(x) + (1 -
    alpha) (sigma / 2) ||J||_F^2`, `sigma` being Hoffman et al.'s
    lambda_JR; the penalty is the mean over every row, labeled or not,
    so it also trains the unlabeled rows of a semi-supervised batch
    (`labeled_rows`), as the label-free member does. `norm` must be "l2"
    (the Frobenius norm); the feature mask weighs the Jacobian's columns.
    The directions are the leading C-coordinate blocks of the step's
    Gaussian random start, normalized (a block of a Gaussian vector is
    uniform on its sphere once normalized), so the inputs need at least
    `projections * C` coordinates. `adv_loss` logs the penalty alone.

    Args:
        projections: random directions k per example, >= 1 (Hoffman et
            al.: 1), or None for the exact norm.

    Examples:
        >>> Jacobian(projections=1).projections
        1
    """

    name = "jacobian"
    second_order = True
    label_free = True

    def __init__(self, projections: int | None = 1):
        self.projections = check_integer("projections", projections, allow_none=True)

    def terms(self, context):
        start = flatten(context.start)
        size = {}

        def projected(index):
            """`sum_i v_i . f(x_i)`, the first call reading C."""

            def output_fn(outputs):
                if isinstance(outputs, (list, tuple, dict)):
                    raise ValueError(
                        "The jacobian form regularizes a model with one output. "
                        f"Received: outputs of type {type(outputs).__name__}"
                    )
                classes = outputs.shape[-1]
                size["classes"] = classes
                v = self._direction(start, index, classes)
                return ops.sum(outputs * ops.cast(v, outputs.dtype))

            rows = context.input_gradient(
                context.zeros(), differentiable=True, output_fn=output_fn
            )
            rows = flatten(inputs.weighted(rows, context.weights))
            return ops.sum(rows * rows, axis=-1)

        count = self.projections
        squared = projected(0)
        classes = size["classes"]
        for index in range(1, classes if count is None else count):
            squared = squared + projected(index)
        if count is not None:
            squared = squared * (classes / count)
        penalty = ops.mean(ops.cast(squared, context.clean_loss.dtype))
        penalty = 0.5 * context.sigma * penalty
        alpha = context.regularizer.alpha
        return context.clean_loss + (1.0 - alpha) * penalty, penalty

    def _direction(self, start, index, classes):
        """The `index`-th direction: a unit vector of R^C per example (one
        output's basis vector for the exact norm)."""
        if self.projections is None:
            return ops.one_hot(ops.convert_to_tensor([index]), classes)
        needed = self.projections * classes
        if start.shape[-1] < needed:
            raise ValueError(
                f"The jacobian form draws `projections * outputs` = {needed} "
                f"coordinates from inputs of {start.shape[-1]}: use fewer projections "
                f"or projections=None. Received: projections={self.projections}"
            )
        block = start[:, index * classes : (index + 1) * classes]
        length = ops.sqrt(ops.sum(block * block, axis=-1, keepdims=True))
        return block / ops.maximum(length, 1e-12)

    def start_norm(self, norm):
        del norm
        return "l2"  # Gaussian directions; their shape, for the exact norm

    def check(self, regularizer) -> None:
        if regularizer.norm != "l2":
            raise ValueError(
                "The jacobian form penalizes the Frobenius norm, an l2 norm: leave "
                f"`norm` at 'l2'. Received: norm={regularizer.norm!r}"
            )

    def get_config(self) -> dict:
        return {"projections": self.projections}
