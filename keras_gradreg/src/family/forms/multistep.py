"""The multistep form: the inner maximization solved by projected steepest
ascent (PGD adversarial training)."""

from __future__ import annotations

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_bool, check_integer, check_number
from keras_gradreg.src.family import multistep
from keras_gradreg.src.family.forms.base import PerturbingForm


@keras_gradreg_export("keras_gradreg.forms.Multistep")
class Multistep(PerturbingForm):
    """`L_adv = L(x + r_k)`, `r_k` from k steps of projected steepest ascent.

    `r_{t+1} = clip_range(Proj_sigma(r_t + step_size * d_p(dL/dx at x +
    r_t)))` from `r_0 = 0` or a random point of the ball, with `r_k` held
    constant in the weight gradient (Danskin's theorem): the PGD adversarial
    training of Madry et al. (2018). A step costs k more forward and
    backward passes. With `steps=1` and no random start it is the perturb
    form.

    Args:
        steps: ascent steps k, >= 1.
        step_size: the length of one step in the norm, > 0; default
            `2.5 * sigma / steps` (Madry et al.), read from the current
            sigma.
        random_start: whether the ascent starts at a uniformly random
            point of the ball (the linf cube; a Gaussian or, for l1,
            Laplace direction at a uniform radius otherwise) rather than at
            x.
        l1_sparsity: for the l1 norm, the quantile of |g| above which
            coordinates move in one step (the sparse step of Tramer &
            Boneh, 2019), in [0, 1).
        share_noise: whether every pass draws the clean pass's dropout
            masks (default), see `Perturb`.
        clean_metrics: whether the step takes a forward pass at the clean
            inputs for the logged `clean_loss` and compiled metrics
            (default). From a random start with alpha = 0 nothing else
            reads that pass: False skips it, reads the compiled metrics
            from the perturbed pass and logs no `clean_loss` (see
            `FGSMRandomStart`).

    Examples:
        >>> Multistep(steps=10, random_start=False).steps
        10
    """

    name = "multistep"

    def __init__(
        self,
        steps: int = 7,
        step_size: float | None = None,
        random_start: bool = True,
        l1_sparsity: float = 0.95,
        share_noise: bool = True,
        clean_metrics: bool = True,
    ):
        self.steps = check_integer("steps", steps)
        self.step_size = multistep.check_step_size(step_size)
        self.random_start = check_bool("random_start", random_start)
        self.l1_sparsity = check_number("l1_sparsity", l1_sparsity, 0.0, below=1.0)
        self.clean_metrics = check_bool("clean_metrics", clean_metrics)
        super().__init__(share_noise)

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
            l1_sparsity=self.l1_sparsity,
            start=context.start,
            weights=context.weights,
        )
        adv_loss = context.perturbed_loss(deltas)
        return context.mixed(adv_loss), adv_loss

    def start_norm(self, norm):
        return norm if self.random_start else None

    @property
    def uses_clean_gradients(self) -> bool:
        return not self.random_start  # the first step's gradient

    def check(self, regularizer) -> None:
        self.check_clean_metrics(regularizer)

    def get_config(self) -> dict:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "l1_sparsity": self.l1_sparsity,
            "clean_metrics": self.clean_metrics,
            **super().get_config(),
        }
