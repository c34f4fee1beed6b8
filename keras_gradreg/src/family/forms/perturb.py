"""The perturb form: training on the first-order worst case (FGSM's
generalization to every norm)."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family.forms.base import PerturbingForm


@keras_gradreg_export("keras_gradreg.forms.Perturb")
class Perturb(PerturbingForm):
    """`L_adv = L(clip(x + r*))`, with `r*` held constant.

    `r*` is the first-order worst case of radius sigma in the norm p
    (`sigma * sign(g)` for linf, `sigma * g / ||g||_2` for l2), so a step
    costs one more forward and backward pass and no second derivative.
    With `norm="linf", alpha=0.5` it is the adversarial training of
    Goodfellow, Shlens & Szegedy (2015).

    Args:
        share_noise: whether the perturbed pass draws the clean pass's
            random noise (dropout masks), so that `r*` is the worst case of
            the network being trained (default). False draws fresh noise,
            as training code that calls the model twice does.

    Examples:
        >>> Perturb(share_noise=False)
        Perturb(share_noise=False)
    """

    name = "perturb"

    def terms(self, context):
        adv_loss = context.perturbed_loss(context.worst_case(context.sigma))
        return context.mixed(adv_loss), adv_loss
