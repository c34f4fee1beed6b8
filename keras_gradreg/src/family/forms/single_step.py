"""Single-step adversarial training from a random start: FGSM-RS and
N-FGSM, the fast recipes that keep FGSM training from collapsing."""

from __future__ import annotations

from keras import ops

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_bool, check_number
from keras_gradreg.src.family import geometry
from keras_gradreg.src.family.forms.base import PerturbingForm
from keras_gradreg.src.family.multistep import flatten, unflatten


class _SingleStep(PerturbingForm):
    """One ascent step from a random point: `r = clip_range(P(eta + a *
    d_p(dL/dx at x + eta)))` with `eta` random in the ball of radius
    `noise * sigma`, `a = step * sigma`, `P` the projection onto the
    sigma-ball or nothing, and `L(x + r)` trained with r held constant."""

    projects: bool = True

    def __init__(
        self, step: float, noise: float, share_noise: bool = True, clean_metrics=True
    ):
        self.step = check_number("step", step, 0.0, exclusive=True, finite=True)
        self.noise = check_number("noise", noise, 0.0, exclusive=True, finite=True)
        self.clean_metrics = check_bool("clean_metrics", clean_metrics)
        super().__init__(share_noise)

    def terms(self, context):
        reg, sigma = context.regularizer, context.sigma
        leaves = context.selection.leaves
        x = ops.stop_gradient(flatten(leaves))
        eta = flatten(context.start) * ops.cast(self.noise * sigma, x.dtype)
        eta = geometry.clip_to_range(x, eta, reg.input_range)
        gradient = flatten(context.input_gradient(unflatten(eta, leaves)))
        direction = geometry.ascent_direction(
            ops.stop_gradient(gradient), reg.norm, x + eta, reg.input_range, 1
        )
        delta = eta + ops.cast(self.step * sigma, x.dtype) * direction
        if self.projects:
            delta = geometry.project(delta, reg.norm, sigma)
        delta = geometry.clip_to_range(x, delta, reg.input_range)
        adv_loss = context.perturbed_loss(unflatten(ops.stop_gradient(delta), leaves))
        return context.mixed(adv_loss), adv_loss

    def start_norm(self, norm):
        return norm

    @property
    def uses_clean_gradients(self) -> bool:
        return False

    def check(self, regularizer) -> None:
        self.check_clean_metrics(regularizer)
        if regularizer.norm == "l1":
            raise ValueError(
                f"The {self.name} form steps in the linf, l2 or a p > 1 ball (a "
                "sparse l1 step from a random point is no published recipe). "
                "Received: norm='l1'"
            )
        if regularizer.feature_mask is not None:
            raise ValueError(
                f"The {self.name} form does not take a `feature_mask`. Received: "
                f"feature_mask={regularizer.feature_mask!r}"
            )

    def get_config(self) -> dict:
        return {
            "step": self.step,
            "noise": self.noise,
            "clean_metrics": self.clean_metrics,
            **super().get_config(),
        }


@keras_gradreg_export("keras_gradreg.forms.FGSMRandomStart")
class FGSMRandomStart(_SingleStep):
    """FGSM from a random start, projected (Wong, Rice & Kolter, ICLR 2020).

    `eta` uniform in the sigma-ball (the linf cube), one step of length
    `step * sigma` (1.25 sigma) along the steepest-ascent direction at
    `x + eta` (`sign(g)` for linf), projected back onto the sigma-ball and
    into the input range: `r = clip_range(Proj_sigma(eta + 1.25 sigma
    sign(dL/dx(x + eta))))`, trained on `L(x + r)`. One more forward and
    backward pass than plain training, as FGSM; the random start keeps it
    from the catastrophic overfitting of plain FGSM at moderate radii (but
    not at large ones: see `NoisyFGSM`).

    Args:
        step: the step length over sigma (Wong et al.: 1.25).
        noise: the radius of the random start over sigma (1: the ball).
        share_noise: whether the passes draw the clean pass's dropout
            masks (see `Perturb`).
        clean_metrics: whether the step takes a forward pass at the clean
            inputs for the logged `clean_loss` and compiled metrics
            (default). The form reads neither the clean loss nor its
            gradient, so False skips that pass (a step one forward pass
            cheaper, near the perturb form's cost), reads the compiled
            metrics from the perturbed pass the weights train on (as Wong
            et al. report training accuracy) and logs no `clean_loss`.

    Examples:
        >>> FGSMRandomStart().step
        1.25
    """

    name = "fgsm_rs"

    def __init__(self, step=1.25, noise=1.0, share_noise=True, clean_metrics=True):
        super().__init__(step, noise, share_noise, clean_metrics)


@keras_gradreg_export("keras_gradreg.forms.NoisyFGSM")
class NoisyFGSM(_SingleStep):
    """N-FGSM: FGSM from a larger noise, not projected (de Jorge et al.,
    NeurIPS 2022).

    `eta` uniform in the ball of radius `noise * sigma` (2 sigma), one step
    of length `step * sigma` (sigma) along the steepest-ascent direction at
    `x + eta`, and **no projection** onto the sigma-ball (only into the
    input range): `r = clip_range(eta + sigma sign(dL/dx(x + eta)))`, whose
    norm may reach 3 sigma. The stronger noise and the missing projection
    avoid catastrophic overfitting at large radii at FGSM's cost.

    Args:
        step: the step length over sigma (de Jorge et al.: 1).
        noise: the radius of the noise over sigma (de Jorge et al.: 2).
        share_noise: whether the passes draw the clean pass's dropout
            masks (see `Perturb`).
        clean_metrics: whether the step takes a forward pass at the clean
            inputs for the logged `clean_loss` and compiled metrics (see
            `FGSMRandomStart`).

    Examples:
        >>> NoisyFGSM().noise
        2.0
    """

    name = "n_fgsm"
    projects = False

    def __init__(self, step=1.0, noise=2.0, share_noise=True, clean_metrics=True):
        super().__init__(step, noise, share_noise, clean_metrics)
