"""The base class of the family's training forms.

A form says how one step trains `max_{||r||_p <= sigma} L(x + r)`: which
adversarial term `L_adv` it builds from the clean pass, and what the step
must compute for it (a second derivative, a random start, the clean pass's
noise replayed). What every form shares (the norm, sigma, alpha, the input
range, which inputs, the feature mask) is the `GradientRegularizer`'s.

A new member of the family is one module: a `Form` subclass that owns its
arguments, their checks and its config, registered with Keras's
serialization, and its tests. Neither the backends nor `GradRegModel`
change for it.
"""

from __future__ import annotations

import inspect
import json
from typing import Callable, NamedTuple

import keras
from keras import ops

from keras_gradreg.src.checks import check_bool
from keras_gradreg.src.family import inputs
from keras_gradreg.src.family.norms import worst_case_perturbation


class FormContext(NamedTuple):
    """What a train step hands a form: one batch's clean pass and the
    passes the form may ask for.

    Attributes:
        regularizer: the `GradientRegularizer` (norm, alpha, input range).
        sigma: the radius, a scalar tensor (it may change during `fit`).
        clean_loss: the weighted clean batch loss `(1/B) sum_i w_i L(x_i)`.
        gradients: each example's input gradient, times the feature mask;
            differentiable with respect to the weights when the form is
            `second_order`; None for a form that does not read them
            (`Form.uses_clean_gradients`).
        raw_gradients: the same without the feature mask.
        norms: `||gradients_i||_q` per example, q dual to the norm (None
            with the gradients).
        weights: the feature mask per regularized input, or None.
        sample_weight: per-example weights, or None.
        perturbed_loss: `(deltas, target=None, *, per_example=False,
            output_fn=None) -> (1/B) sum_i w_i L(clip(x_i + delta_i))`, one
            more forward pass (the label-free member's divergence from
            `target` instead of the loss; with `per_example`, each
            example's unweighted loss `L(clip(x_i + delta_i))`, shape (B,);
            with `output_fn`, `output_fn(outputs)` of the moved outputs,
            differentiable with respect to the weights).
        input_gradient: `(deltas, target=None, *, differentiable=False,
            output_fn=None) -> dL_i/dx` at `clip(x_i + delta_i)`, one more
            forward and backward pass. With a `target`, the gradient of
            the KL divergence from it instead of the loss; with
            `output_fn`, of `output_fn(outputs)` (a scalar summed over the
            batch, such as a projection of the logits). The weights are
            held constant unless `differentiable`: then the gradient is
            differentiated with respect to them too (double
            backpropagation at the moved point; set `second_order`).
        selection: the regularized inputs (`inputs.InputSelection`).
        start: the random start the form asked for (`Form.start_norm`), a
            point of the unit ball per input, or None.
        target: the label-free member's constant clean probabilities p(x).
        probabilities: `(outputs=None) -> p`, the class probabilities of
            the clean outputs, differentiable with respect to the weights
            when the form sets `uses_clean_outputs` (TRADES's divergence
            from them), or of `outputs` (inside an `output_fn`).
        example_losses: `(outputs=None) -> L_i`, each example's unweighted
            loss, shape (B,), of the clean outputs (differentiable under
            `uses_clean_outputs`) or of `outputs` (inside an `output_fn`).
        labels: `() -> y`, the labels as one-hot rows shaped like the
            outputs, shape (B, classes).
    """

    regularizer: object
    sigma: object
    clean_loss: object
    gradients: list
    raw_gradients: list
    norms: object
    weights: object
    sample_weight: object
    perturbed_loss: Callable
    input_gradient: Callable | None
    selection: object
    start: object
    target: object
    probabilities: Callable | None = None
    example_losses: Callable | None = None
    labels: Callable | None = None

    def worst_case(self, radius) -> list:
        """The first-order worst case `r*` of radius `radius` in the norm,
        with the feature mask applied (`w * r*(w g)`), a constant of the
        weight gradient."""
        reg = self.regularizer
        gradients = [ops.stop_gradient(g) for g in self.gradients]
        deltas = worst_case_perturbation(gradients, reg.norm, radius)
        return inputs.weighted(deltas, self.weights)

    def zeros(self) -> list:
        """Zero perturbations of the moved inputs (`input_gradient` at the
        clean point), shaped like the random start."""
        return [ops.zeros_like(t) for t in self.start]

    def batch_mean(self, values):
        """`(1/B) sum_i w_i v_i`, the reduction of Keras's losses."""
        return weighted_batch_mean(values, self.sample_weight)

    def mixed(self, adv_loss):
        """`alpha L(x) + (1 - alpha) L_adv` (just `L_adv` at alpha = 0)."""
        alpha = self.regularizer.alpha
        if alpha == 0.0:
            return adv_loss
        return alpha * self.clean_loss + (1.0 - alpha) * adv_loss


def weighted_batch_mean(values, sample_weight):
    """`(1/B) sum_i w_i v_i`, Keras's "sum_over_batch_size" reduction.

    For a multi-output model Keras hands the train step one weight array per
    output (a plain 1-D `sample_weight` is broadcast to every output); the
    per-example penalty then carries the mean of example i's per-output
    weights, which is the weight itself in the broadcast case.
    """
    if sample_weight is None:
        return ops.mean(values)
    leaves = [w for w in keras.tree.flatten(sample_weight) if w is not None]
    if not leaves:
        return ops.mean(values)
    weights = [ops.reshape(ops.cast(w, values.dtype), (-1,)) for w in leaves]
    weights = weights[0] if len(weights) == 1 else ops.mean(ops.stack(weights), 0)
    return ops.mean(weights * values)


#: Shorthand -> form class, filled as `Form` subclasses are defined.
REGISTRY: dict = {}


class Form:
    """How one member of the family is trained (the base class).

    Subclasses set `name` (the string shorthand), implement `terms`, take
    their own arguments in `__init__` (checked there, with errors naming
    the argument and the value) and return them from `get_config`. The
    class attributes and methods below tell the train step what to
    compute; their defaults suit a first-order form that perturbs the
    inputs once.

    Attributes:
        name: the string shorthand (`form="perturb"`).
        second_order: whether the objective differentiates through the input
            gradient (double backpropagation).
        label_free: whether the adversarial term is a divergence from the
            clean prediction rather than the loss: it then trains on every
            row, labeled or not.
        aliases: 0.1.0's keyword names for this form's arguments
            (`{"fd_step": "step"}`), accepted by `GradientRegularizer`.
        uses_clean_outputs: whether the objective differentiates the clean
            outputs themselves, not only the clean loss (TRADES's
            divergence from p(x)): the clean pass then keeps its own
            backward.
    """

    name: str = ""
    second_order: bool = False
    label_free: bool = False
    aliases: dict = {}
    uses_clean_outputs: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if (
                cls.name in REGISTRY
                and REGISTRY[cls.name].__qualname__ != cls.__qualname__
            ):
                raise ValueError(
                    f"The form name {cls.name!r} is taken by "
                    f"{REGISTRY[cls.name].__name__}. Received: {cls.__name__}.name="
                    f"{cls.name!r}"
                )
            REGISTRY[cls.name] = cls

    def terms(self, context: FormContext):
        """Returns `(total, adv_loss)`: what the optimizer minimizes (before
        layer losses) and the adversarial term logged as `adv_loss`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `terms`.")

    def uses_clean_loss(self, alpha: float) -> bool:
        """Whether the objective contains the clean loss (its weight
        gradient is then needed, not only dL/dx)."""
        del alpha
        return True

    @property
    def uses_clean_gradients(self) -> bool:
        """Whether `terms` reads the input gradient at the clean point
        (`FormContext.gradients`). A form that starts from a random point
        does not: the step then skips the clean pass's backward, and the
        logged `grad_norm` is the loss gradient's at that point, the first
        one the form takes."""
        return True

    def needs_clean_pass(self, alpha: float) -> bool:
        """Whether the step runs the forward pass at the clean inputs.
        Every form does unless it reads neither the clean loss nor the
        clean gradient and its logs are taken from the perturbed pass
        (`clean_metrics=False` of the forms that start from a random
        point)."""
        del alpha
        return True

    @property
    def replays_noise(self) -> bool:
        """Whether the step's later passes replay the clean pass's random
        draws (dropout masks), so that they see the same network."""
        return True

    def start_norm(self, norm):
        """The norm of the unit ball the step draws a random start from,
        or None for no random start."""
        del norm
        return None

    def check(self, regularizer) -> None:
        """Refuses, with a `ValueError` naming the argument and the value,
        what the regularizer shares that this form cannot train (called
        when a `GradientRegularizer` is made)."""
        del regularizer

    # Configuration, equality and display, from `get_config`.

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Form:
        return cls(**config)

    def replace(self, **changes) -> Form:
        """A copy with `changes` applied (and checked)."""
        return type(self).from_config({**self.get_config(), **changes})

    @classmethod
    def argument_names(cls) -> tuple:
        """The names `__init__` takes."""
        if cls.__init__ is object.__init__:
            return ()
        parameters = inspect.signature(cls.__init__).parameters
        return tuple(name for name in parameters if name != "self")

    def __eq__(self, other):
        if isinstance(other, str):  # the shorthand builds the default object
            if other not in REGISTRY:
                return False
            other = REGISTRY[other]()
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), json.dumps(self.get_config(), sort_keys=True)))

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class PerturbingForm(Form):
    """A form that trains on the loss at perturbed inputs, `L(x + r)` with
    r held constant: the clean loss enters only through alpha, and the
    perturbed passes draw the clean pass's dropout masks unless
    `share_noise` is False.

    Args:
        share_noise: whether every pass draws the clean pass's random noise
            (dropout masks), so that r is the worst case of the network
            being trained (default). False draws fresh noise, as training
            code that calls the model twice does.
    """

    def __init__(self, share_noise: bool = True):
        self.share_noise = check_bool("share_noise", share_noise)

    clean_metrics = True  # see `check_clean_metrics`

    def uses_clean_loss(self, alpha: float) -> bool:
        return alpha > 0.0

    def needs_clean_pass(self, alpha: float) -> bool:
        return (
            self.clean_metrics
            or self.uses_clean_loss(alpha)
            or self.uses_clean_gradients
        )

    def check_clean_metrics(self, regularizer) -> None:
        """Refuses `clean_metrics=False` where the step takes the clean pass
        anyway (the clean loss in the objective, alpha > 0, or the clean
        gradient read): it would drop the clean logs and save nothing."""
        if self.clean_metrics:
            return
        if regularizer.alpha > 0.0:
            raise ValueError(
                f"`clean_metrics=False` skips the clean forward pass, which the "
                f"{self.name} form takes when the clean loss is in the objective. "
                f"Use alpha=0 or clean_metrics=True. Received: alpha="
                f"{regularizer.alpha!r}"
            )
        if self.uses_clean_gradients:
            raise ValueError(
                f"`clean_metrics=False` skips the clean forward pass, which the "
                f"{self.name} form takes for its first step's gradient. Use "
                f"random_start=True or clean_metrics=True. Received: "
                f"{self!r}"
            )

    @property
    def replays_noise(self) -> bool:
        return self.share_noise

    def get_config(self) -> dict:
        return {"share_noise": self.share_noise}
