"""JAX train step: `jax.grad` (input gradient) inside the loss that
`jax.value_and_grad` differentiates over `stateless_call`."""

import os

import jax
import keras
from jax.extend import core as jax_core

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.family import inputs
from keras_gradreg.src.training import loss_scale, objective
from keras_gradreg.src.training.backend.common import train_logs
from keras_gradreg.src.training.step_plan import plan_step


def _stateless_forward(model, trainable, non_trainable, x):
    kwargs = {"training": True} if _keras_compat.call_has_training_arg(model) else {}
    return model.stateless_call(
        trainable, non_trainable, x, return_losses=True, **kwargs
    )


def _unconnected_outputs(closed_jaxpr) -> list:
    """For each output of a jaxpr, whether it depends on none of its
    arguments. jax.grad returns zeros for an input with no differentiable
    path to the loss; in the gradient's jaxpr that zero is a broadcast
    literal, connected to nothing (a nested call counts as connected when
    any of its inputs is, so the test errs only towards "connected")."""
    jaxpr = closed_jaxpr.jaxpr
    connected = set(jaxpr.invars)
    for equation in jaxpr.eqns:
        if any(
            not isinstance(v, jax_core.Literal) and v in connected
            for v in equation.invars
        ):
            connected.update(equation.outvars)
    return [
        isinstance(v, jax_core.Literal) or v not in connected for v in jaxpr.outvars
    ]


def _check_connected_inputs(
    model, x, y, sample_weight, selection, trainable, non_trainable
):
    """Refuses a regularized input whose gradient is zero by construction.
    Functional models were checked on their graph before training; this
    covers subclassed ones, at trace time only."""
    if isinstance(getattr(model, "outputs", None), list):
        return

    def summed(leaves, trainable, non_trainable):
        y_pred, _, _ = _stateless_forward(
            model, trainable, non_trainable, selection.rebuild(x, leaves)
        )
        return objective.clean_losses(model, y, y_pred, sample_weight)[1]

    jaxpr = jax.make_jaxpr(jax.grad(summed))(selection.leaves, trainable, non_trainable)
    dead = _unconnected_outputs(jaxpr)
    inputs.check_input_gradients(
        [None if d else 0 for d in dead],
        selection,
        model.regularizer.inputs_to_regularize,
    )


def _shares_clean_backward_here() -> bool:
    """Whether sharing the clean backward (`objective.shares_clean_backward`)
    pays on this device. On CPU under XLA's default fusions it measured 3-16%
    slower than two backward passes (the products it saves are fused into
    the slow YNNPACK dot fusions docs/performance.md describes); with
    `--xla_cpu_experimental_ynn_fusion_type=individual_dot`, and on other
    devices, it saves them."""
    if jax.default_backend() != "cpu":
        return True
    return "ynn_fusion_type=individual_dot" in os.environ.get("XLA_FLAGS", "")


class _NoiseReplay:
    """The layers' random-generator states (dropout masks) in a
    non-trainable state list, to put back into a later one: a forward pass
    run on `replayed(state)` draws the noise of the pass that started from
    the list given here (docs/family.md, "One noise draw per step"). It
    replays nothing where `objective.replays_noise` says no pass needs it."""

    def __init__(self, model, non_trainable):
        replays = objective.replays_noise(model.regularizer)
        self.positions = _keras_compat.layer_seed_positions(model) if replays else []
        self.states = [non_trainable[i] for i in self.positions]

    def replayed(self, non_trainable):
        non_trainable = list(non_trainable)
        for i, state in zip(self.positions, self.states):
            non_trainable[i] = state
        return non_trainable


def train_step(model, state, data):
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    plan = plan_step(model, data)
    reg, x, y, sample_weight = plan.regularizer, plan.x, plan.y, plan.sample_weight
    unlabeled, selection = plan.unlabeled, plan.selection
    moved_x, moved = plan.moved()
    second_order = plan.second_order
    metrics_mapping = list(zip(model.metrics_variables, metrics_vars))
    optimizer_mapping = list(zip(model.optimizer.variables, optimizer_vars))
    with keras.StatelessScope(state_mapping=optimizer_mapping):
        scale = loss_scale.input_gradient_loss_scale(model.optimizer, x)
    if plan.random_start:
        # The draw advances the seed, a metric variable of the state.
        with keras.StatelessScope(state_mapping=metrics_mapping) as scope:
            start = objective.random_start(model, moved)
        metrics_vars = [_current(scope, v) for v in model.metrics_variables]
        metrics_mapping = list(zip(model.metrics_variables, metrics_vars))
    else:
        start = None

    def summed_clean_loss(trainable, leaves, non_trainable):
        y_pred, non_trainable, losses = _stateless_forward(
            model, trainable, non_trainable, selection.rebuild(x, leaves)
        )
        clean_loss, summed = objective.clean_losses(model, y, y_pred, sample_weight)
        summed = loss_scale.scale_summed_loss(summed, scale)
        return summed, (clean_loss, y_pred, non_trainable, losses)

    def clean_pass(trainable, non_trainable):
        """One forward pass: the clean loss and each example's dL/dx (None
        when the form reads none: `StepPlan.clean_gradients`); no pass at
        all when nothing reads it (`StepPlan.clean_pass`)."""
        if not plan.clean_pass:
            return None, (None, None, non_trainable, []), None
        if not plan.clean_gradients:
            _, aux = summed_clean_loss(trainable, selection.leaves, non_trainable)
            return None, aux, None
        gradients, aux = jax.grad(summed_clean_loss, argnums=1, has_aux=True)(
            trainable, selection.leaves, non_trainable
        )
        gradients = loss_scale.unscale_input_gradients(gradients, scale)
        if not second_order:
            gradients = [jax.lax.stop_gradient(g) for g in gradients]
        return gradients, aux, None

    def shared_clean_pass(trainable, non_trainable):
        """The clean pass with one backward for dL/dx and the clean weight
        gradient (`objective.shares_clean_backward`), or None when the pass
        adds layer losses."""
        summed, backward, aux = jax.vjp(
            lambda t, leaves: summed_clean_loss(t, leaves, non_trainable),
            trainable,
            selection.leaves,
            has_aux=True,
        )
        if aux[3]:
            return None
        weight_gradients, gradients = backward(jax.numpy.ones_like(summed))
        return list(gradients), aux, weight_gradients

    def loss_fn(trainable, clean_value, non_trainable, precomputed):
        # `precomputed` holds a clean pass made outside the differentiation
        # when the objective does not contain the clean loss (perturb form,
        # alpha=0) or when one backward gave its weight gradient too (then
        # the clean loss enters as `clean_value`, differentiated on its own);
        # otherwise the clean pass is part of what is differentiated.
        # The passes over the regularized rows draw the noise of their first.
        noise = _NoiseReplay(model, non_trainable)
        gradients, (clean_loss, y_pred, non_trainable, losses), weight_gradients = (
            precomputed or clean_pass(trainable, non_trainable)
        )
        if weight_gradients is not None:
            clean_loss = clean_value
        # Forward passes run in sequence: the perturbed pass sees the state
        # (dropout seeds, batch statistics) the clean pass left behind.
        latest = {"non_trainable": non_trainable, "losses": losses}
        target_outputs = y_pred
        if unlabeled is not None:  # the label-free member's own rows
            noise = _NoiseReplay(model, latest["non_trainable"])
            target_outputs, latest["non_trainable"], _ = _stateless_forward(
                model, trainable, latest["non_trainable"], unlabeled
            )
        target = objective.virtual_target(model, target_outputs)

        def perturbed_loss(deltas, target=None, *, per_example=False, output_fn=None):
            x_adv = inputs.perturb_inputs(moved_x, moved, deltas, reg.input_range)
            y_adv, latest["non_trainable"], adv_losses = _stateless_forward(
                model, trainable, noise.replayed(latest["non_trainable"]), x_adv
            )
            if precomputed:  # layer losses of the differentiated pass
                latest["losses"] = adv_losses
            latest["outputs"] = y_adv
            return objective.adversarial_loss(
                model, y, y_adv, sample_weight, target, per_example, output_fn
            )

        def input_gradient(
            deltas, target=None, *, differentiable=False, output_fn=None
        ):
            # The ascent steps' first derivatives, weights fixed; a gradient
            # the objective differentiates again keeps them.
            weights = trainable if differentiable else jax.lax.stop_gradient(trainable)

            def summed_loss(leaves, non_trainable):
                y_adv, non_trainable, _ = _stateless_forward(
                    model, weights, non_trainable, moved.rebuild(moved_x, leaves)
                )
                summed = objective.ascent_loss(model, y, y_adv, target, output_fn)
                return loss_scale.scale_summed_loss(summed, scale), non_trainable

            leaves = inputs.perturbed_leaves(moved, deltas, reg.input_range)
            step_gradients, latest["non_trainable"] = jax.grad(
                summed_loss, has_aux=True
            )(leaves, noise.replayed(latest["non_trainable"]))
            return loss_scale.unscale_input_gradients(step_gradients, scale)

        terms = objective.family_objective(
            reg,
            clean_loss,
            gradients,
            sample_weight,
            perturbed_loss,
            model.sigma_variable,
            input_gradient=input_gradient,
            selection=selection,
            start=start,
            target=target,
            **objective.clean_output_readers(model, y, y_pred),
        )
        regularization = objective.regularization_losses(latest["losses"])
        total = terms.total + regularization.astype(terms.total.dtype)
        loss = total
        if model.optimizer is not None:
            with keras.StatelessScope(state_mapping=optimizer_mapping):
                loss = model.optimizer.scale_loss(total)
        if not plan.clean_pass:  # the metrics read the perturbed pass
            y_pred = latest["outputs"]
        return loss, (terms, total, y_pred, latest["non_trainable"])

    with keras.StatelessScope(state_mapping=metrics_mapping):
        # The scope absorbs any metric update made by the compiled loss.
        _check_connected_inputs(
            model, x, y, sample_weight, selection, trainable, non_trainable
        )
        precomputed = None
        if not plan.record_clean:
            precomputed = clean_pass(trainable, non_trainable)
        elif _shares_clean_backward_here() and objective.shares_clean_backward(
            reg, sample_weight, scale
        ):
            precomputed = shared_clean_pass(trainable, non_trainable)
        clean_value = jax.numpy.zeros(())
        if precomputed and precomputed[1][0] is not None:
            clean_value = precomputed[1][0]
        (_, (terms, total, y_pred, non_trainable)), (grads, coefficient) = (
            jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
                trainable, clean_value, non_trainable, precomputed
            )
        )
        if precomputed and precomputed[2] is not None:
            # d objective / d weights through the clean loss, from its
            # weight gradient and d objective / d clean loss.
            grads = objective.add_scaled(grads, coefficient, precomputed[2], x)
    trainable, optimizer_vars = model.optimizer.stateless_apply(
        optimizer_vars, grads, trainable
    )

    with keras.StatelessScope(state_mapping=metrics_mapping) as scope:
        logs = train_logs(model, terms, total, x, y, y_pred, sample_weight)
    metrics_vars = [_current(scope, v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _current(scope, variable):
    value = scope.get_current_value(variable)
    return variable.value if value is None else value


def values_and_input_gradient(fn, x):
    """For `fn(x) -> (values, aux)` with per-example `values` of shape
    (batch,), returns `(values, aux, d sum(values) / dx)`."""

    def total(x):
        values, aux = fn(x)
        return values.sum(), (values, aux)

    (_, (values, aux)), gradient = jax.value_and_grad(total, has_aux=True)(x)
    return values, aux, gradient


def compile_attack(model, fn):
    """`jax.jit(fn)` reading the model's variables as arguments, so the
    compiled attack always sees the current weights (a closure would bake
    them in as constants). `fn` takes and returns arrays."""
    variables = list(model.variables)

    @jax.jit
    def run(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    return lambda *args: run([v.value for v in variables], *args)
