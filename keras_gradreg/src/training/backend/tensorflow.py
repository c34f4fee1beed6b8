"""TensorFlow train step: nested `tf.GradientTape`s over one forward pass."""

import contextlib

import keras
import tensorflow as tf

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.family import inputs
from keras_gradreg.src.training import loss_scale, objective
from keras_gradreg.src.training.backend.common import call_model, train_logs
from keras_gradreg.src.training.step_plan import plan_step


def train_step(model, data):
    # The step is traced inside both contexts: exact second derivatives
    # through normalization layers (see `_keras_compat.exact_moments`), and
    # Philox for Keras's random draws (dropout masks), fast under XLA.
    with _keras_compat.exact_moments(), philox_sampling():
        return _train_step(model, data)


def _train_step(model, data):
    plan = plan_step(model, data)
    reg, x, y, sample_weight = plan.regularizer, plan.x, plan.y, plan.sample_weight
    unlabeled, selection = plan.unlabeled, plan.selection
    moved_x, moved = plan.moved()
    record_clean = plan.record_clean
    scale = loss_scale.input_gradient_loss_scale(model.optimizer, x)
    share = objective.shares_clean_backward(reg, sample_weight, scale)
    start = objective.random_start(model, moved)
    # The passes over the regularized rows draw the noise of their first pass.
    replay = _noise_replay(model) if unlabeled is None else None

    # No clean pass when nothing reads it (StepPlan.clean_pass).
    y_pred = clean_loss = gradients = weight_gradients = None
    layer_losses, outputs = [], {}
    with tf.GradientTape() as tape:
        if plan.clean_pass:
            y_pred, clean_loss, gradients, layer_losses, share, weight_gradients = (
                _clean_pass(plan, model, tape, scale, share)
            )
        if unlabeled is None:
            target = objective.virtual_target(model, y_pred)
        else:  # the label-free member's own rows
            with tape.stop_recording():
                replay = _noise_replay(model)
                target = objective.virtual_target(model, call_model(model, unlabeled))

        def perturbed_loss(deltas, target=None, *, per_example=False, output_fn=None):
            nonlocal layer_losses
            x_adv = inputs.perturb_inputs(moved_x, moved, deltas, reg.input_range)
            replay()
            y_adv = call_model(model, x_adv)
            outputs["perturbed"] = y_adv
            if not record_clean:
                layer_losses = model.losses
            return objective.adversarial_loss(
                model, y, y_adv, sample_weight, target, per_example, output_fn
            )

        def input_gradient(
            deltas, target=None, *, differentiable=False, output_fn=None
        ):
            # The ascent steps' first derivatives, weights fixed; a gradient
            # the objective differentiates again is recorded by the tape.
            recording = (
                contextlib.nullcontext() if differentiable else tape.stop_recording()
            )
            with recording:
                leaves = inputs.perturbed_leaves(moved, deltas, reg.input_range)
                with tf.GradientTape(watch_accessed_variables=False) as step_tape:
                    step_tape.watch(leaves)
                    replay()
                    y_adv = call_model(model, moved.rebuild(moved_x, leaves))
                    summed = objective.ascent_loss(model, y, y_adv, target, output_fn)
                    summed = loss_scale.scale_summed_loss(summed, scale)
                moved_gradients = step_tape.gradient(summed, leaves)
            return loss_scale.unscale_input_gradients(moved_gradients, scale)

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
        regularization = objective.regularization_losses(layer_losses)
        total = terms.total + tf.cast(regularization, terms.total.dtype)
        loss = objective.scale_loss_for_distribution(total)
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)

    weights = model.trainable_weights
    gradients = tape.gradient(loss, [*weights, *([clean_loss] if share else [])])
    if share:
        gradients = objective.add_scaled(
            gradients[:-1], gradients[-1], weight_gradients, x
        )
    model.optimizer.apply_gradients(zip(gradients, weights))
    if not plan.clean_pass:  # the metrics read the perturbed pass
        y_pred = outputs["perturbed"]
    logs = train_logs(model, terms, total, x, y, y_pred, sample_weight)
    return multi_worker_logs(model, logs)


def _clean_pass(plan, model, tape, scale, share):
    """The forward pass at the clean inputs, under the weights' `tape`:
    returns `(y_pred, clean_loss, gradients, layer_losses, share,
    weight_gradients)`, with each example's dL/dx when the form reads it
    (`StepPlan.clean_gradients`, else None) and, with a shared backward
    (`objective.shares_clean_backward`), the clean loss's weight gradient
    from the same one."""
    x, y, sample_weight = plan.x, plan.y, plan.sample_weight
    selection, record_clean, second_order = (
        plan.selection, plan.record_clean, plan.second_order,
    )  # fmt: skip
    gradients = weight_gradients = None
    # The perturb form with alpha=0 needs the clean pass only for dL/dx.
    with contextlib.nullcontext() if record_clean else tape.stop_recording():
        # With a shared backward it also watches the weights (read after the
        # call: a subclassed model builds them in its first one).
        with tf.GradientTape(watch_accessed_variables=share) as input_tape:
            input_tape.watch(selection.leaves)
            y_pred = call_model(model, x)
            clean_loss, summed = objective.clean_losses(model, y, y_pred, sample_weight)
            summed = loss_scale.scale_summed_loss(summed, scale)
        # Layer losses come from the forward pass the weights are
        # differentiated through (the perturbed one when this is not).
        layer_losses = model.losses
        share = share and not layer_losses
        variables = [v.value for v in model.trainable_weights] if share else []
        first_order_only = (
            tape.stop_recording()
            if record_clean and not second_order
            else contextlib.nullcontext()
        )
        with first_order_only:
            if plan.clean_gradients:
                sources = [*selection.leaves, *variables]
                gradients = input_tape.gradient(summed, sources)
                weight_gradients = gradients[len(selection.leaves) :]
                gradients = gradients[: len(selection.leaves)]
                inputs.check_input_gradients(
                    gradients, selection, plan.regularizer.inputs_to_regularize
                )
                gradients = loss_scale.unscale_input_gradients(gradients, scale)
        if share:  # one backward for both (shares_clean_backward)
            clean_loss = tf.stop_gradient(clean_loss)
            tape.watch(clean_loss)  # differentiated on its own
        if not second_order and gradients is not None:
            gradients = [tf.stop_gradient(g) for g in gradients]
    return y_pred, clean_loss, gradients, layer_losses, share, weight_gradients


def _noise_replay(model):
    """Reads the state of the layers' random generators (dropout masks) and
    returns a function that sets it back: each forward pass that calls it
    first draws the noise of the pass that followed the read (docs/family.md,
    "One noise draw per step"). A no-op where `objective.replays_noise` says
    no pass needs it."""
    if not objective.replays_noise(model.regularizer):
        return lambda: None
    variables = model.non_trainable_variables
    states = [variables[i] for i in _keras_compat.layer_seed_positions(model)]
    saved = [tf.identity(v.value) for v in states]

    def replay():
        for variable, value in zip(states, saved):
            variable.assign(value)

    return replay


# Keras's TF samplers use the "auto_select" algorithm, which XLA on CPU
# compiles to a generator about 50x slower than Philox (a 128 x 784 uniform
# draw: 40 ms against 0.9 ms, TF 2.21): with it a random start cost more
# than four training steps, and the three dropout layers of the maxout MLP
# made a plain Keras step 4.5x slower under XLA than without dropout. The
# train step and the attacks are traced with Philox samplers instead (same
# seeds, same arguments; XLA's Philox stream differs from the TF kernel's,
# so a run with and without jit_compile draws differently).
_cast_seed, _draw_seed, _noise_shape = _keras_compat.tf_random_internals()


def _philox_dropout(inputs, rate, noise_shape=None, seed=None):
    if rate == 1.0:
        return tf.zeros_like(inputs)
    if rate == 0.0:
        return inputs
    return tf.nn.experimental.stateless_dropout(
        inputs,
        rate=rate,
        noise_shape=_noise_shape(inputs, noise_shape),
        seed=_cast_seed(_draw_seed(seed)),
        rng_alg="philox",
    )


def _philox_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    return tf.random.stateless_uniform(
        shape, _cast_seed(_draw_seed(seed)), minval=tf.cast(minval, dtype),
        maxval=tf.cast(maxval, dtype), dtype=dtype, alg="philox",
    )  # fmt: skip


def _philox_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    return tf.random.stateless_normal(
        shape, _cast_seed(_draw_seed(seed)), mean=mean, stddev=stddev,
        dtype=dtype, alg="philox",
    )  # fmt: skip


def philox_sampling():
    """The context in which Keras's dropout, uniform and normal draws use
    Philox (see `_keras_compat.tf_samplers`)."""
    return _keras_compat.tf_samplers(
        dropout=_philox_dropout, uniform=_philox_uniform, normal=_philox_normal
    )


# Keras 3's TF trainer breaks `fit` under a multi-worker
# MultiWorkerMirroredStrategy in two places (tensorflow/tensorflow#72388):
# it reduces each step's scalar logs with `strategy.reduce("MEAN", v, axis=0)`,
# which needs a batch axis, and it reads a distributed batch's shapes through
# a cross-worker reduce that cannot convert `PerReplica` values. The two
# helpers below route around both, and only there.
def multi_worker_logs(model, logs):
    """Under multi-worker MultiWorkerMirroredStrategy, gives each scalar log
    the length-1 axis that Keras's cross-worker mean reduces over (the
    result is the same scalar mean over replicas); elsewhere returns `logs`
    unchanged."""
    if not _keras_compat.tf_multi_worker(model.distribute_strategy):
        return logs
    return {k: tf.reshape(v, (1,)) if v.shape.rank == 0 else v for k, v in logs.items()}


def first_local_batch(model, iterator):
    """The first batch of `iterator` as the first local replica sees it
    (for Keras's symbolic build, which needs only shapes and dtypes), or
    None when Keras's own path works."""
    strategy = model.distribute_strategy
    if iterator is None or not _keras_compat.tf_multi_worker(strategy):
        return None
    for _, _, batches in iterator:
        batch = next(batches)
        break
    local = strategy.experimental_local_results
    return tf.nest.map_structure(
        lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v,
        batch,
    )


def values_and_input_gradient(fn, x):
    """For `fn(x) -> (values, aux)` with per-example `values` of shape
    (batch,), returns `(values, aux, d sum(values) / dx)`."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        values, aux = fn(x)
    gradient = tape.gradient(
        values, x, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return values, aux, gradient


def compile_attack(model, fn):
    """`fn` as one XLA-compiled `tf.function` (it reads the model's variables
    by reference, so later weight updates are seen). `fn` takes and returns
    tensors."""
    del model  # variables are captured by reference

    def traced(*args):
        with philox_sampling():  # random starts and Square's draws
            return fn(*args)

    return tf.function(traced, jit_compile=True, reduce_retracing=True)
