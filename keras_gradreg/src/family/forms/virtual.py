"""The label-free member: virtual adversarial training."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number
from keras_gradreg.src.family import inputs, virtual
from keras_gradreg.src.family.forms.base import Form
from keras_gradreg.src.family.norms import worst_case_perturbation


@keras_gradreg_export("keras_gradreg.forms.Virtual")
class Virtual(Form):
    """`L(x) + weight * KL(p(x) || p(x + r*))`, r* by power iteration.

    Virtual adversarial training (Miyato et al., 2018): the loss at the
    moved inputs is replaced by the divergence of the prediction from the
    clean one, p(x) held constant, so no label is needed: every row trains
    it, labeled or not (give unlabeled rows sample weight 0, or use
    `labeled_rows`). The divergence has zero gradient at r = 0, so r* is
    taken along the dominant eigenvector of its Hessian, found by power
    iteration from a random direction, and scaled to radius sigma in the
    norm. 0.1.0 spelled it `virtual=True` with `form="perturb"`. `weight`,
    not `alpha`, weighs the two terms.

    Args:
        weight: the weight of the divergence term, >= 0 (0.1.0's
            `virtual_weight`).
        xi: the power iteration's finite-difference radius, > 0, in the
            inputs' units. It must lift `x + xi d` (d a unit vector) above
            float32 round-off, about `6e-8 |x|` per coordinate: Miyato et
            al.'s 1e-6 does not on 784-pixel images in [0, 1], so the
            default is 1e-2.
        power_iterations: power-iteration steps, >= 1 (Miyato et al.: 1).

    Examples:
        >>> Virtual(weight=0.5).weight
        0.5
    """

    name = "virtual"
    label_free = True
    aliases = {"virtual_weight": "weight"}

    def __init__(self, weight: float = 1.0, xi: float = 1e-2, power_iterations=1):
        self.weight = check_number("weight", weight, 0.0, finite=True)
        self.xi = check_number("xi", xi, 0.0, exclusive=True, finite=True)
        self.power_iterations = check_integer("power_iterations", power_iterations)

    def terms(self, context):
        # With a mask w the iteration runs in s, r = w s: the Hessian is W H W.
        weights, target = context.weights, context.target

        def divergence_gradient(deltas):
            moved = context.input_gradient(inputs.weighted(deltas, weights), target)
            return inputs.weighted(moved, weights)

        direction = virtual.power_iteration(
            divergence_gradient, context.start, self.xi, self.power_iterations
        )
        norm = context.regularizer.norm
        deltas = worst_case_perturbation(direction, norm, context.sigma)
        adv_loss = context.perturbed_loss(inputs.weighted(deltas, weights), target)
        return context.clean_loss + self.weight * adv_loss, adv_loss

    def start_norm(self, norm):
        del norm
        return "l2"  # the power iteration's random unit direction

    def check(self, regularizer) -> None:
        if regularizer.alpha != 0.0:
            raise ValueError(
                "The label-free member adds `weight` times the divergence to the "
                "clean loss; `alpha` does not apply. Received: "
                f"alpha={regularizer.alpha}"
            )

    def get_config(self) -> dict:
        return {
            "weight": self.weight,
            "xi": self.xi,
            "power_iterations": self.power_iterations,
        }
