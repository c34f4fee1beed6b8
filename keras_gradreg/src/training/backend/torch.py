"""PyTorch train step: `torch.autograd.grad(create_graph=True)` over one
forward pass."""

import keras
import numpy as np
import torch
from keras import ops

from keras_gradreg.src import keras_compat as _keras_compat
from keras_gradreg.src.family import inputs
from keras_gradreg.src.training import loss_scale, objective
from keras_gradreg.src.training.backend.common import call_model, train_logs
from keras_gradreg.src.training.step_plan import plan_step


def check_distribution():
    """Refuses distributed training, which the torch backend cannot do here.

    Keras's trainer for torch runs one process on one device, and
    `keras.distribution` has no torch implementation. Under
    `torch.distributed` each process would fit its own replica on its own
    data with nothing averaging the weights, so a GradRegModel stops rather
    than train replicas that silently drift apart.

    Raises:
        RuntimeError: if a Keras distribution is set, or a
            `torch.distributed` process group with more than one process is
            initialized.
    """
    distribution = keras.distribution.distribution()
    if distribution is not None:
        raise RuntimeError(
            "GradRegModel cannot train under a Keras distribution on the torch "
            "backend (keras.distribution has no torch implementation). Use the "
            "JAX backend for keras.distribution, or the TensorFlow backend "
            "with tf.distribute. Received: keras.distribution.distribution()="
            f"{distribution!r}"
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
        if world_size > 1:
            raise RuntimeError(
                "GradRegModel on the torch backend trains in one process: Keras's "
                "torch trainer does not average gradients across processes, so "
                "each process would train its own diverging copy. Use the "
                "TensorFlow backend (tf.distribute.MultiWorkerMirroredStrategy) "
                "or JAX (keras.distribution.DataParallel), or run one process. "
                f"Received: torch.distributed world_size={world_size}"
            )


def train_function(model, function):
    """Keras's train function for `model`, runnable under torch.compile.

    The first-order forms with the clean loss in the objective (alpha > 0,
    finite differences, sigma = 0) backpropagate the clean pass twice when
    they cannot share one backward (`objective.shares_clean_backward`: with
    sample weights, layer losses or loss scaling): once for dL/dx, keeping
    the graph, then for the weights. AOTAutograd's
    donated buffers free the saved activations in the first backward
    ("compiled with non-empty donated buffers which requires ...
    retain_graph=False"), so the compiled step compiles with them off; it
    costs memory for the saved activations, not speed.
    """
    if function is None or not model.jit_compile:
        return function
    if getattr(function, "_keras_gradreg_wrapped", False):
        return function

    def run(data):
        with torch._functorch.config.patch(donated_buffer=False):
            return function(data)

    run._keras_gradreg_wrapped = True
    return run


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    # `train_on_batch` hands over NumPy arrays, and torch Keras refuses a
    # call mixing them with the tensors the differentiated inputs become.
    x = keras.tree.map_structure(
        lambda t: t if t is None else ops.convert_to_tensor(t), x
    )
    plan = plan_step(model, (x, y, sample_weight), _requiring_grad)
    reg, x, y, sample_weight = plan.regularizer, plan.x, plan.y, plan.sample_weight
    unlabeled, selection = plan.unlabeled, plan.selection
    leaves = selection.leaves
    record_clean = plan.record_clean

    model.zero_grad()
    # The passes over the regularized rows draw the noise of their first pass.
    replay = _noise_replay(model, leaves) if unlabeled is None else None
    scale = loss_scale.input_gradient_loss_scale(model.optimizer, x)
    share = objective.shares_clean_backward(reg, sample_weight, scale)
    # No clean pass when nothing reads it (StepPlan.clean_pass).
    y_pred = clean_loss = gradients = weight_gradients = None
    layer_losses, outputs = [], {}
    if plan.clean_pass:
        y_pred, clean_loss, gradients, layer_losses, share, weight_gradients = (
            _clean_pass(plan, model, scale, share)
        )
    constant = selection._replace(leaves=[t.detach() for t in leaves])
    moved_x, moved = plan.moved(constant)
    if unlabeled is None:
        target = objective.virtual_target(model, y_pred)
    else:  # the label-free member's own rows
        with torch.no_grad():
            replay = _noise_replay(model, leaves)
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

    def input_gradient(deltas, target=None, *, differentiable=False, output_fn=None):
        # The ascent steps' first derivatives, weights fixed; a gradient the
        # objective differentiates again keeps its graph.
        leaves = inputs.perturbed_leaves(moved, deltas, reg.input_range)
        leaves = [t.detach().requires_grad_(True) for t in leaves]
        replay()
        y_adv = call_model(model, moved.rebuild(moved_x, leaves))
        summed = objective.ascent_loss(model, y, y_adv, target, output_fn)
        steps = torch.autograd.grad(
            loss_scale.scale_summed_loss(summed, scale),
            leaves,
            create_graph=differentiable,
        )
        if not differentiable:
            steps = [g.detach() for g in steps]
        return loss_scale.unscale_input_gradients(steps, scale)

    terms = objective.family_objective(
        reg,
        clean_loss,
        gradients,
        sample_weight,
        perturbed_loss,
        model.sigma_variable,
        input_gradient=input_gradient,
        selection=constant,
        start=objective.random_start(model, moved),
        target=target,
        **objective.clean_output_readers(model, y, y_pred),
    )
    regularization = objective.regularization_losses(layer_losses)
    total = terms.total + regularization.to(terms.total.dtype)
    loss = model.optimizer.scale_loss(total) if model.optimizer else total
    weights = model.trainable_weights[:]
    if weights and loss.requires_grad:
        # Only the weights: a plain `backward()` would also differentiate the
        # objective with respect to the inputs (they require grad for dL/dx),
        # one more first-layer-sized matrix product per step for nothing.
        extra = [clean_loss] if share else []
        loss.backward(inputs=[*(v.value for v in weights), *extra])
        with torch.no_grad():
            gradients = [v.value.grad for v in weights]
            if share:
                gradients = objective.add_scaled(
                    gradients, clean_loss.grad, weight_gradients, x, _multiply_add_
                )
            model.optimizer.apply(gradients, weights)
    if not plan.clean_pass:  # the metrics read the perturbed pass
        y_pred = keras.tree.map_structure(lambda t: t.detach(), outputs["perturbed"])
    return train_logs(model, terms, total.detach(), x, y, y_pred, sample_weight)


def _clean_pass(plan, model, scale, share):
    """The forward pass at the clean inputs: returns `(y_pred, clean_loss,
    gradients, layer_losses, share, weight_gradients)`, with each example's
    dL/dx when the form reads it (`StepPlan.clean_gradients`, else None)
    and, with a shared backward (`objective.shares_clean_backward`), the
    clean loss's weight gradient from the same one."""
    reg, x, y, sample_weight = plan.regularizer, plan.x, plan.y, plan.sample_weight
    selection, record_clean = plan.selection, plan.record_clean
    leaves, second_order, weight_gradients = selection.leaves, plan.second_order, None
    y_pred = call_model(model, x)
    clean_loss, summed = objective.clean_losses(model, y, y_pred, sample_weight)
    # Layer losses come from the forward pass the weights are differentiated
    # through (the perturbed one when the clean pass is not).
    layer_losses = model.losses
    share = share and not layer_losses
    variables = [v.value for v in model.trainable_weights] if share else []
    gradients = None  # the form reads none (StepPlan.clean_gradients)
    if plan.clean_gradients:
        gradients = torch.autograd.grad(
            loss_scale.scale_summed_loss(summed, scale),
            [*leaves, *variables],
            create_graph=second_order,
            retain_graph=record_clean and not share,
            allow_unused=True,
        )
        if share:  # one backward for both (objective.shares_clean_backward)
            weight_gradients = gradients[len(leaves) :]
            clean_loss = clean_loss.detach().requires_grad_(True)  # its own input
            gradients = gradients[: len(leaves)]
        inputs.check_input_gradients(gradients, selection, reg.inputs_to_regularize)
        gradients = loss_scale.unscale_input_gradients(gradients, scale)
        if not second_order:
            gradients = [g.detach() for g in gradients]
    if not record_clean:
        clean_loss = clean_loss.detach()
        y_pred = keras.tree.map_structure(lambda t: t.detach(), y_pred)
    return y_pred, clean_loss, gradients, layer_losses, share, weight_gradients


def _requiring_grad(leaves):
    """The regularized inputs as fresh leaves of autograd's graph."""
    return [ops.convert_to_tensor(t).detach().requires_grad_(True) for t in leaves]


def _multiply_add_(g, m, scale):
    """`objective.add_scaled`'s `g + scale * m`, in place: one `addcmul_`
    into the fresh gradients autograd returned. In eager mode each
    elementwise op is a pass over the weights with an allocation of its
    own, and the three of the out-of-place form cost more than the clean
    pass's backward saved."""
    if g is None:
        return m.mul_(scale.to(m.dtype))
    return g.addcmul_(m.to(g.dtype), scale.to(g.dtype))


def _noise_replay(model, tensors):
    """Reads the state of the layers' random generators and of torch's
    global one, and returns a function that sets both back: each forward
    pass that calls it first draws the noise of the pass that followed the
    read (docs/family.md, "One noise draw per step"). Keras's dropout draws
    from the global generator when its layer has no seed, from the layer's
    `SeedGenerator` otherwise. A no-op where `objective.replays_noise` says
    no pass needs it (then nothing is read on the eager step's hot path)."""
    if not objective.replays_noise(model.regularizer):
        return lambda: None
    variables = model.non_trainable_variables
    states = [variables[i] for i in _keras_compat.layer_seed_positions(model)]
    saved = [v.value.clone() for v in states]
    device = tensors[0].device if tensors else torch.device("cpu")
    generator = _generator_state(device)

    def replay():
        for variable, value in zip(states, saved):
            variable.assign(value)
        _set_generator_state(generator, device)

    return replay


def _generator_state(device):
    """The state of torch's default generator on `device` (CPU or CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_generator_state(state, device):
    """Sets `device`'s default generator back to `_generator_state(device)`."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _generator_devices():
    """The CPU and every visible CUDA device by name (`"cpu"`, `"cuda0"`,
    ...): each has its own default generator, and Keras's unseeded dropout
    draws from the one of the device its tensors live on."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cuda = {f"cuda{i}": torch.device("cuda", i) for i in range(count)}
    return {"cpu": torch.device("cpu"), **cuda}


def global_random_state():
    """torch's default generators' states, one NumPy array per device, keyed
    `"cpu"`, `"cuda0"`, ...: Keras's unseeded dropout draws from them (see
    `_noise_replay`)."""
    return {
        name: _generator_state(device).cpu().numpy()
        for name, device in _generator_devices().items()
    }


def set_global_random_state(states):
    """Sets torch's default generators back to `global_random_state()`'s.

    Raises:
        ValueError: for a CUDA state of a device that is not present
            (a backup made on another machine cannot resume its draws here).
    """
    devices = _generator_devices()
    missing = sorted(set(states) - set(devices))
    if missing:
        raise ValueError(
            f"The saved random state holds generators for {missing}, which this "
            f"machine does not have (it has {sorted(devices)}). Received: "
            f"states with keys {sorted(states)}"
        )
    for name, state in states.items():
        tensor = torch.from_numpy(np.asarray(state, dtype=np.uint8))
        _set_generator_state(tensor, devices[name])


def values_and_input_gradient(fn, x):
    """For `fn(x) -> (values, aux)` with per-example `values` of shape
    (batch,), returns `(values, aux, d sum(values) / dx)`."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values, aux = fn(x)
        gradient = None
        if values.requires_grad:  # False when no path leads back to x
            (gradient,) = torch.autograd.grad(values.sum(), x, allow_unused=True)
        if gradient is None:
            gradient = torch.zeros_like(x)
    detach = lambda t: None if t is None else t.detach()  # noqa: E731
    return values.detach(), keras.tree.map_structure(detach, aux), gradient.detach()


def compile_attack(model, fn):
    """Eager on torch (torch.compile cannot differentiate twice, and attacks
    gain little from it on CPU): `fn` with its arguments as tensors."""
    del model

    def run(*args):
        with torch.no_grad():
            return fn(*[ops.convert_to_tensor(a) for a in args])

    return run
