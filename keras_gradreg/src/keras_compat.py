"""Every private Keras name the library uses, in one place.

Each entry says why no public form serves. `make test-keras-range` runs the
core tests on the oldest supported Keras as well as the newest, so a
release that moves one of these fails in CI rather than for a user.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect

import keras
from keras import ops

# Functional construction: `GradRegModel(inputs, outputs)` must become a
# Functional model without turning GradRegModel itself into a Functional
# subclass; Keras exposes neither the Functional class nor its argument test.
from keras.src.models.functional import Functional  # noqa: F401
from keras.src.models.model import functional_init_arguments  # noqa: F401

# `@default` marks `get_config` as Keras's own, so Functional serialization
# (rather than the subclass path) still applies to functional GradRegModels.
from keras.src.utils.python_utils import default  # noqa: F401

# The backend's trainer class (TensorFlowTrainer, JAXTrainer, TorchTrainer):
# functional GradRegModels initialise it before Functional, as keras.Model
# does internally; Keras has no public name for it.
BackendTrainer = keras.Model.__bases__[0]


def softmax_logits(y_pred):
    """The logits Keras's TensorFlow backend keeps on a softmax's output
    (`_keras_logits`, which its own cross-entropies differentiate instead
    of the probabilities), or None on the other backends and for any
    other tensor."""
    return getattr(y_pred, "_keras_logits", None)


def _compile_loss(model):
    loss = getattr(model, "_compile_loss", None)
    if loss is None:
        raise ValueError(
            "GradRegModel trains on the loss given to `compile()`, and none was "
            "given. Pass one, e.g. "
            "`model.compile(optimizer, loss='sparse_categorical_crossentropy')`. "
            "Received: loss=None"
        )
    return loss


def compiled_loss(model, y, y_pred, sample_weight):
    """The compiled loss, leaving the per-output loss metrics alone.

    `model._compile_loss` is the `CompileLoss` that `compile()` builds; the
    public `compute_loss` adds the layer losses of whatever pass ran last,
    which the family must take from the pass it differentiates. A
    multi-output `CompileLoss` also updates one `Mean` per output on every
    call: the train steps call it on clean, unweighted and perturbed
    predictions, so it runs here with those metrics detached, and
    `track_output_losses` updates them once, on the clean predictions.
    """
    loss = _compile_loss(model)
    metrics = loss._metrics  # CompileLoss.metrics reads this list
    if not metrics:  # single output (or not built yet): nothing to detach
        return loss(y, y_pred, sample_weight)
    # One None per output: CompileLoss zips its losses with this list and
    # skips the update where the entry is None.
    loss._metrics = [None] * len(metrics)
    try:
        return loss(y, y_pred, sample_weight)
    finally:
        loss._metrics = metrics


def track_output_losses(model, y, y_pred, sample_weight):
    """Updates a multi-output model's per-output loss metrics (`a_loss`,
    ...) with the clean predictions, as Keras's own train step does."""
    loss = _compile_loss(model)
    if loss._metrics:
        loss(y, y_pred, sample_weight)


def loss_tracker(model):
    """The `Mean` behind the "loss" log: the "loss" entry of the public
    `model.metrics` (the train steps record the family's objective there)."""
    for metric in model.metrics:
        if metric.name == "loss":
            return metric
    raise ValueError(  # pragma: no cover - compiled models always have one
        f"{model.name} has no 'loss' metric; compile it first. Received: "
        f"metrics={[m.name for m in model.metrics]}"
    )


def call_has_training_arg(model) -> bool:
    """Whether `model.call` takes `training`. Keras records it when the
    layer is built (`Layer._call_has_training_arg`); reading that keeps
    `inspect.signature` out of the traced step, where torch.compile broke
    its graph and warned about the cache. Without it, the public signature,
    read once per `call` function."""
    known = getattr(model, "_call_has_training_arg", None)
    if isinstance(known, bool):
        return known
    return _takes_training(getattr(type(model), "call", None) or model.call)


@functools.cache
def _takes_training(call) -> bool:
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


try:  # tf.distribute's replica scaling of losses (no-op on other backends).
    from keras.src.losses.loss import (  # noqa: F401 - re-exported
        scale_loss_for_distribution,
        unscale_loss_for_distribution,
    )
except ImportError as error:  # pragma: no cover - other Keras layouts
    raise ImportError(
        "keras_gradreg needs Keras's scale_loss_for_distribution (keras>=3.10): "
        "without it losses under tf.distribute would be silently mis-scaled. "
        f"Received: keras {keras.__version__}"
    ) from error


def inputs_without_float_path(model, inputs) -> list:
    """The functional model's input tensors among `inputs` from which no
    chain of floating-point tensors leads to an output (e.g. every path runs
    through `Discretization`'s integer bins): their gradient is zero by
    construction. Walks the functional graph through KerasTensor's
    `_keras_history` and the operations' `_inbound_nodes`, which Keras
    keeps private; an empty list for non-functional models.
    """
    if not isinstance(getattr(model, "outputs", None), list):
        return []  # subclassed: no graph to walk
    memo = {}

    def reaches(tensor, source) -> bool:
        key = (id(tensor), id(source))
        if key in memo:
            return memo[key]
        memo[key] = False  # cycles cannot occur; guards re-entry
        if tensor is source:
            memo[key] = True
            return True
        if not keras.backend.is_float_dtype(tensor.dtype):
            return False
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return False
        node = history.operation._inbound_nodes[history.node_index]
        memo[key] = any(reaches(t, source) for t in node.input_tensors)
        return memo[key]

    outputs = keras.tree.flatten(model.outputs)
    return [source for source in inputs if not any(reaches(o, source) for o in outputs)]


def layer_seed_positions(model) -> list:
    """Positions, in `model.non_trainable_variables`, of the states of the
    `SeedGenerator`s its layers draw from (dropout masks, noise layers).
    Keras keeps them among the non-trainable variables with nothing public
    telling them from batch statistics; the layers list them in their
    private `_seed_generators`."""
    states = {
        id(generator.state)
        for layer in model._flatten_layers(include_self=True)
        for generator in getattr(layer, "_seed_generators", ())
    }
    return [i for i, v in enumerate(model.non_trainable_variables) if id(v) in states]


def tf_multi_worker(strategy) -> bool:
    """Whether Keras's TF trainer treats `strategy` as multi-worker (its
    `_collective_all_reduce_multi_worker`, the test behind the two Keras
    bugs that `backend.tensorflow.first_local_batch` and
    `multi_worker_logs` route around, tensorflow/tensorflow#72388; the
    public strategy API does not say whether it is in multi-worker mode).
    GradRegModel overrides Keras's private `_maybe_symbolic_build` for the
    same reason."""
    trainer = importlib.import_module("keras.src.backend.tensorflow.trainer")
    return trainer._collective_all_reduce_multi_worker(strategy)


def tf_build_before_tracing(model, iterator=None, data_batch=None) -> bool:
    """Builds `model`'s metrics, loss and optimizer from the first batch
    (Keras's private `_symbolic_build`, which its JAX and torch trainers
    always call) where Keras's TF trainer would leave them to the first trace
    of its step: when no distribution strategy was set (its private
    `_distribute_strategy`). Built inside the trace, their new variables make
    `tf.function` trace the step a second time. Returns whether it built."""
    if model._distribute_strategy is not None:
        return False
    model._symbolic_build(iterator=iterator, data_batch=data_batch)
    return True


def _exact_moments(x, axes, keepdims=False):
    """Mean and variance with exact derivatives of every order.

    TensorFlow's `tf.nn.moments` (behind Keras's `ops.moments` on that
    backend) computes the variance around `stop_gradient(mean)`. That is
    exact for first derivatives (the deviations sum to zero) but drops a
    term of the second derivative, which the penalty form differentiates:
    double backpropagation through BatchNormalization or LayerNormalization
    was off by up to 10% on TensorFlow alone.
    """
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    if not keepdims:
        mean = ops.squeeze(mean, axes)
        variance = ops.squeeze(variance, axes)
    return mean, variance


@contextlib.contextmanager
def exact_moments():
    """Within the context, Keras's TensorFlow `moments` (BatchNormalization,
    LayerNormalization, `ops.moments`) use `_exact_moments`. A no-op on
    the other backends, whose moments are exact already.

    Keras's TF backend calls its module-level `_compute_moments`; there is
    no public hook for the moments a layer uses.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    module = importlib.import_module("keras.src.backend.tensorflow.nn")
    original = module._compute_moments
    module._compute_moments = _exact_moments
    try:
        yield
    finally:
        module._compute_moments = original


def tf_random_internals():
    """`(cast_seed, draw_seed, concrete_noise_shape)` of Keras's TensorFlow
    random module, for samplers that must treat seeds and noise shapes
    exactly as Keras's own do (see `tf_samplers`)."""
    module = importlib.import_module("keras.src.backend.tensorflow.random")
    return module._cast_seed, module.draw_seed, module._get_concrete_noise_shape


@contextlib.contextmanager
def tf_samplers(**replacements):
    """Within the context, the named functions of Keras's TensorFlow random
    module (`dropout`, `uniform`, `normal`: what `keras.layers.Dropout` and
    `keras.random` call) are `replacements`. A no-op on other backends.

    Keras draws with TensorFlow's "auto_select" algorithm, which XLA on CPU
    compiles to a ThreeFry generator tens of times slower than Philox; the
    module-level functions are the only place to choose another.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    module = importlib.import_module("keras.src.backend.tensorflow.random")
    originals = {name: getattr(module, name) for name in replacements}
    for name, function in replacements.items():
        setattr(module, name, function)
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(module, name, function)
