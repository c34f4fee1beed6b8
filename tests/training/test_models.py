"""GradRegModel behaviour: History, sigma=0, g=0, jit, subclassing, arguments
(which inputs are differentiated: test_inputs.py)."""

import math

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests.conftest import BACKEND
from tests.helpers import LABELLED_FORMS as FORMS
from tests.helpers import compile_


def mlp(dropout=0.0, first_kernel="glorot_uniform", **regularizer):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu", kernel_initializer=first_kernel)(
        inputs
    )
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    if regularizer.pop("plain", False):
        return keras.Model(inputs, outputs)
    return kg.GradRegModel(inputs, outputs, **regularizer)


def _no_random_start(form):
    """The form by name, the multistep one without its random start."""
    if form == "multistep":
        return kg.forms.Multistep(random_start=False)
    return form


@pytest.mark.parametrize("form", FORMS)
def test_history_holds_epoch_means_of_objective_and_parts(classification_data, form):
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.5, form=form, alpha=0.25), lr=0.0)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert set(history) == {
        "loss", "clean_loss", "adv_loss", "grad_norm", "sigma", "accuracy"
    }  # fmt: skip
    # With a zero learning rate the weights never move, so each epoch mean of
    # the clean loss is the dataset's clean loss.
    clean, accuracy = model.evaluate(x, y, batch_size=48, verbose=0)
    np.testing.assert_allclose(history["clean_loss"], [clean] * 2, rtol=1e-5)
    np.testing.assert_allclose(history["accuracy"], [accuracy] * 2, rtol=1e-6)
    loss = np.array(history["loss"])
    assert np.all(loss > 0.0)
    expected = 0.25 * np.array(history["clean_loss"]) + 0.75 * np.array(
        history["adv_loss"]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(np.array(history["adv_loss"]) > np.array(history["clean_loss"]))
    assert np.all(np.array(history["grad_norm"]) > 0.0)


def test_grad_norm_is_the_mean_per_example_norm_whatever_the_batch(classification_data):
    x, y = classification_data
    logged = []
    for batch_size in (1, 7, 48):
        keras.utils.set_random_seed(3)
        model = compile_(mlp(norm="linf", sigma=0.1), lr=0.0)
        logged.append(
            model.fit(x, y, batch_size=batch_size, verbose=0).history["grad_norm"][0]
        )
    np.testing.assert_allclose(logged, [logged[0]] * 3, rtol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_sigma_zero_trains_exactly_like_a_plain_keras_model(classification_data, form):
    x, y = classification_data
    weights = []
    for plain in (True, False):
        keras.utils.set_random_seed(11)
        model = compile_(mlp(dropout=0.3, plain=plain, sigma=0.0, form=form), lr=0.1)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=True)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", 3.0])
@pytest.mark.parametrize("form", FORMS)
def test_zero_input_gradient_gives_no_nan(classification_data, norm, form):
    """A zero first-layer kernel makes dL/dx exactly 0: the L2 norm's
    derivative and every division by ||g|| must stay finite."""
    _check_finite_at_zero_input_gradient(classification_data, norm, form)


def _check_finite_at_zero_input_gradient(data, norm, form):
    x, y = data
    model = compile_(mlp(first_kernel="zeros", norm=norm, sigma=0.3, form=form), lr=0.1)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert history["grad_norm"][0] == 0.0
    assert all(np.isfinite(v[0]) for v in history.values())
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize(
    "form, norm",
    [(form, norm) for form in ("fgsm_rs", "n_fgsm", "squared_penalty", "gradalign",
                               "curvature", "llr", "trades", "mart")
     for norm in ("linf", "l2")]
    + [("jacobian", "l2")],  # the Frobenius norm, l2 only
)  # fmt: skip
def test_zero_input_gradient_gives_no_nan_for_the_later_members(
    classification_data, norm, form
):
    """The same for the members after the paper: GradAlign's cosine of two
    zero gradients differentiated again, CURE's and LLR's normalized
    directions, TRADES's ascent from a flat divergence."""
    _check_finite_at_zero_input_gradient(classification_data, norm, form)


@pytest.mark.parametrize("form", FORMS)
def test_sample_weight_zero_removes_examples(classification_data, form):
    """Examples with weight 0 contribute nothing to the weight update."""
    x, y = classification_data
    keep = np.arange(len(x)) % 2 == 0
    updates = []
    for xs, ys, sw in ((x, y, keep.astype("float32")), (x[keep], y[keep], None)):
        keras.utils.set_random_seed(5)
        model = compile_(mlp(norm="l2", sigma=0.3, form=_no_random_start(form)), lr=1.0)
        before = model.get_weights()
        model.train_on_batch(xs, ys, sample_weight=sw)
        updates.append([b - a for b, a in zip(before, model.get_weights())])
    # The weighted batch mean divides by all 48 examples, the subset by 24.
    for a, b in zip(*updates):
        np.testing.assert_allclose(2.0 * a, b, rtol=2e-4, atol=1e-6)


def test_class_weight_weights_the_objective(classification_data):
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.3), lr=0.0)
    plain = model.fit(x, y, batch_size=48, verbose=0).history
    weighted = model.fit(
        x, y, batch_size=48, verbose=0, class_weight={0: 0.0, 1: 0.0, 2: 0.0}
    ).history
    assert plain["loss"][0] > 0.0
    assert weighted["loss"][0] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch.compile cannot differentiate twice"
)
@pytest.mark.parametrize("form", FORMS)
def test_jit_compile_true_matches_eager(classification_data, form):
    x, y = classification_data
    weights = []
    for jit in (False, True):
        keras.utils.set_random_seed(2)
        # Random starts off: TensorFlow's Philox stream differs under XLA.
        regularizer = dict(norm="l2", sigma=0.3, form=_no_random_start(form))
        model = compile_(mlp(**regularizer), lr=0.1, jit_compile=jit)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        assert model.jit_compile is jit
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
def test_torch_jit_with_penalty_names_the_alternatives(classification_data):
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.3), jit_compile=True)
    with pytest.raises(ValueError, match="jit_compile=False.*finite_difference"):
        model.fit(x, y, verbose=0)
    compile_(model, jit_compile=False)
    model.fit(x, y, verbose=0)
    # First derivatives only: allowed, and the compiled step is the eager
    # step. The multistep form with alpha > 0 and no random start runs every
    # first-order path (input gradients without a graph, the perturbed pass,
    # the clean pass backpropagated twice, as finite differences and
    # sigma = 0 do); one compile costs one to three minutes, so one form is
    # compiled here, on the paper's network: with its dropout, AOTAutograd's
    # donated buffers refused the second backward until the train function
    # turned them off (`keras_gradreg.backend.torch.train_function`). Under
    # `fallback_random`, Inductor draws the dropout masks from torch's
    # generator as eager torch does, so the two updates compare.
    import torch

    updates, logs = [], []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(7)
        maxout = kg.models.mnist_maxout_mlp(
            (6,), num_classes=3, units=4, pieces=3, norm="l2", sigma=0.3,
            form="multistep", steps=1, alpha=0.5, random_start=False,
        )  # fmt: skip
        compile_(maxout, lr=0.5, jit_compile=jit_compile)
        before = maxout.get_weights()
        with torch._inductor.config.patch(fallback_random=True):
            history = maxout.fit(x, y, batch_size=len(x), verbose=0).history
        logs.append({key: values[-1] for key, values in history.items()})
        updates.append([a - b for a, b in zip(maxout.get_weights(), before)])
    (eager_logs, compiled_logs), (eager, compiled) = logs, updates
    assert compiled_logs["adv_loss"] > compiled_logs["clean_loss"]
    for key in ("loss", "adv_loss", "clean_loss", "grad_norm"):
        np.testing.assert_allclose(compiled_logs[key], eager_logs[key], rtol=1e-5)
    assert max(np.abs(u).max() for u in eager) > 1e-3  # the step moved
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="torch.compile"):
        maxout.regularizer = maxout.regularizer.replace(form="penalty")


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
def test_a_loaded_jit_compiled_penalty_model_trains_eagerly_on_torch(
    classification_data,
):
    """A model saved on JAX carries jit_compile=True; loaded on torch, the
    penalty form (which torch.compile cannot differentiate twice) trains
    eagerly and says so."""
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.3), jit_compile=False)
    config = {**model.get_compile_config(), "jit_compile": True}
    loaded = mlp(norm="l2", sigma=0.3)
    with pytest.warns(UserWarning, match="trains eagerly"):
        loaded.compile_from_config(config)
    assert loaded.jit_compile is False
    loaded.fit(x, y, verbose=0)


def test_regularizer_can_be_changed_after_fit(classification_data):
    x, y = classification_data
    model = compile_(mlp(norm="l2", sigma=0.0), lr=0.0)
    first = model.fit(x, y, batch_size=48, verbose=0).history
    assert first["adv_loss"] == first["clean_loss"]
    model.regularizer = model.regularizer.replace(sigma=1.0, norm="linf")
    second = model.fit(x, y, batch_size=48, verbose=0).history
    assert second["adv_loss"][0] > second["clean_loss"][0] + 1e-3
    model.regularizer = {"norm": "l1", "sigma": 0.2, "form": "perturb"}
    assert model.regularizer == kg.GradientRegularizer(
        norm="l1", sigma=0.2, form="perturb"
    )


class Subclassed(kg.GradRegModel):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="tanh")
        self.out = keras.layers.Dense(3, activation="softmax")

    def call(self, x, training=False):
        return self.out(self.hidden(x))


@pytest.mark.parametrize("form", FORMS)
def test_subclassed_model_trains(classification_data, form):
    x, y = classification_data
    model = compile_(Subclassed(units=4, norm="l1", sigma=0.2, form=form))
    history = model.fit(x, y, batch_size=16, verbose=0).history
    assert history["adv_loss"][0] > history["clean_loss"][0]


BAD_ARGUMENTS = [
    ({"norm": "l3"}, "norm='l3'"),
    ({"norm": 0.5}, "norm=0.5"),
    ({"norm": None, "regularizer": {"norm": [2]}}, r"norm=\[2\]"),
    ({"sigma": -0.1}, "sigma=-0.1"),
    ({"sigma": float("nan")}, "sigma=nan"),
    ({"alpha": 1.0}, "alpha=1.0"),
    ({"alpha": -0.2}, "alpha=-0.2"),
    ({"form": "adversarial"}, "form='adversarial'"),
    ({"form": "finite_difference", "fd_step": 0.0}, "fd_step=0.0"),
    ({"form": "finite_difference", "fd_step": -1e-3}, "fd_step=-0.001"),
    ({"input_range": (1.0, 0.0)}, r"input_range=\(1.0, 0.0\)"),
    ({"input_range": (0.0,)}, r"input_range=\(0.0,\)"),
    ({"input_range": (0.0, math.inf)}, r"input_range=\(0.0, inf\)"),
    ({"inputs_to_regularize": []}, r"inputs_to_regularize=\(\)"),
    ({"sigma": 0.1, "regularizer": kg.GradientRegularizer()}, "not both"),
    ({"form": "perturb", "share_noise": 1}, "share_noise=1"),
    ({"form": "finite_difference", "share_noise": False}, "form='finite_difference'"),
    ({"form": "perturb", "virtual": True, "share_noise": False}, "virtual=True"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_bad_arguments_name_the_argument_and_value(kwargs, message):
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        mlp(**kwargs)


def test_loss_with_unsupported_reduction_is_rejected(classification_data):
    model = mlp(sigma=0.1)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(reduction="sum"))
    with pytest.raises(ValueError, match="reduction='sum'"):
        model.fit(*classification_data, verbose=0)


@pytest.mark.parametrize(
    "form,alpha",
    [
        ("penalty", 0.0),
        ("perturb", 0.0),
        ("perturb", 0.5),
        ("finite_difference", 0.0),
        ("multistep", 0.0),
    ],
)
def test_layer_regularization_losses_are_added_once_with_their_gradient(
    classification_data, form, alpha
):
    """A kernel L2 regularizer adds exactly 2 * l2 * W to the weight gradient."""
    x, y = classification_data
    updates = []
    for l2 in (0.0, 0.5):
        keras.utils.set_random_seed(9)
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(
            4, activation="tanh", kernel_regularizer=keras.regularizers.L2(l2)
        )
        outputs = keras.layers.Dense(3, activation="softmax")(hidden(inputs))
        model = compile_(
            kg.GradRegModel(
                inputs, outputs, norm="l2", sigma=0.2, form=form, alpha=alpha
            ),
            lr=1.0,
        )
        kernel = np.array(hidden.kernel)
        model.train_on_batch(x, y)
        updates.append(kernel - np.array(hidden.kernel))
    np.testing.assert_allclose(
        updates[1] - updates[0], 2 * 0.5 * kernel, rtol=1e-4, atol=1e-6
    )


def test_functional_construction_keeps_gradregmodel_subclassable():
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, activation="softmax")(inputs)
    functional = kg.GradRegModel(inputs, outputs, sigma=0.1)
    assert isinstance(functional, kg.GradRegModel)
    assert kg.GradRegModel.__bases__ == (keras.Model,)  # Keras did not rewrite it
    assert isinstance(Subclassed(units=3), kg.GradRegModel)
    with pytest.raises(ValueError, match=r"Subclassed\(inputs, outputs"):
        Subclassed(inputs, outputs)


@pytest.mark.parametrize("container", ["dict", "list"])
@pytest.mark.parametrize("form", FORMS)
def test_multi_output_models_train_with_per_output_metrics_on_clean_inputs(
    container, form
):
    """A classifier with an auxiliary head: every form trains with a plain
    1-D sample_weight, and `a_loss`/`b_loss`/`clean_loss` equal Keras's own
    `evaluate` on the clean inputs (learning rate 0: the weights stay)."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 6)).astype("float32")
    ya, yb = rng.integers(0, 3, 32), rng.integers(0, 2, 32)
    sample_weight = rng.uniform(0.5, 1.5, 32).astype("float32")
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh")(inputs)
    a = keras.layers.Dense(3, activation="softmax", name="a")(h)
    b = keras.layers.Dense(2, activation="softmax", name="b")(h)
    if container == "dict":
        outputs, y = {"a": a, "b": b}, {"a": ya, "b": yb}
        loss = {
            "a": "sparse_categorical_crossentropy",
            "b": "sparse_categorical_crossentropy",
        }
    else:
        outputs, y, loss = [a, b], [ya, yb], ["sparse_categorical_crossentropy"] * 2
    alpha = 0.0 if form == "penalty" else 0.3
    model = kg.GradRegModel(
        inputs, outputs, norm="l2", sigma=0.1, form=form, alpha=alpha
    )
    model.compile(keras.optimizers.SGD(0.0), loss)
    logs = model.fit(
        x, y, sample_weight=sample_weight, batch_size=32, epochs=1, verbose=0
    ).history
    clean = model.evaluate(
        x, y, sample_weight=sample_weight, batch_size=32, verbose=0, return_dict=True
    )
    # Keras 3.10 leaves tensors in these logs: compare floats.
    first = {k: float(np.asarray(v[0])) for k, v in logs.items()}
    clean = {k: float(np.asarray(v)) for k, v in clean.items()}
    for key in ("a_loss", "b_loss"):
        assert first[key] == pytest.approx(clean[key], rel=1e-5)
    assert first["clean_loss"] == pytest.approx(clean["loss"], rel=1e-5)
    assert first["adv_loss"] > first["clean_loss"]


def test_call_gets_training_only_when_it_takes_it():
    seen = []

    class WithTraining(kg.GradRegModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, x, training=None):
            seen.append(training)
            return self.dense(x)

    class WithoutTraining(WithTraining):
        def call(self, x):
            return self.dense(x)

    x = np.random.default_rng(0).random((8, 3)).astype("float32")
    regularizer = dict(sigma=0.1, form="perturb")
    for model in (WithTraining(**regularizer), WithoutTraining(**regularizer)):
        model.compile("sgd", "sparse_categorical_crossentropy")
        history = model.fit(x, np.arange(8) % 2, batch_size=8, verbose=0).history
        assert np.isfinite(history["loss"][0])
    # Two passes (clean, perturbed) per step, each told it is training.
    assert seen and all(flag is True for flag in seen[-2:])


def test_missing_loss_and_unknown_regularizer_keys_are_clear_errors():
    inputs = keras.Input((3,))
    model = kg.GradRegModel(inputs, keras.layers.Dense(2, "softmax")(inputs))
    model.compile("sgd")
    with pytest.raises(ValueError, match="Received: loss=None"):
        model.fit(np.zeros((4, 3)), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="unknown keys: \\['sigmaa'\\]"):
        kg.GradRegModel(inputs, inputs, regularizer={"norm": "l2", "sigmaa": 0.1})


def test_an_overridden_compute_loss_is_refused_not_bypassed():
    class Custom(kg.GradRegModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.dense(x)

        def compute_loss(
            self, x=None, y=None, y_pred=None, sample_weight=None, training=True
        ):
            return keras.ops.mean(y_pred)

    model = Custom(sigma=0.1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="compute_loss"):
        model.fit(np.zeros((4, 3), "float32"), np.zeros(4), verbose=0)


def test_import_is_light():
    """`import keras_gradreg` loads neither keras-tuner nor
    tensorflow-datasets; `kg.tuning` imports on first use."""
    import subprocess
    import sys

    code = (
        "import sys, keras_gradreg as kg\n"
        "heavy = [m for m in ('keras_tuner', 'tensorflow_datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "kg.tuning.GradRegHyperModel\n"
        "assert 'keras_tuner' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's random samplers")
def test_tensorflow_steps_draw_dropout_masks_and_starts_with_philox():
    """Keras's TF draws leave the algorithm to TensorFlow ("auto_select",
    3), which XLA on CPU compiles to a slow generator; GradRegModel's step
    fixes Philox (1) for every draw (dropout masks and the multistep form's
    random start), a plain Keras step does not."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.random((8, 6), "float32"), rng.integers(0, 3, 8)

    def algorithms(model):
        compile_(model)
        graph = tf.function(lambda a, b: model.train_step((a, b)))
        ops = graph.get_concrete_function(x, y).graph.get_operations()
        draws = [op for op in ops if op.type.startswith("StatelessRandom")]
        draws = [op for op in draws if op.type.endswith("V2")]
        return [int(tf.get_static_value(op.inputs[-1])) for op in draws]

    assert set(algorithms(mlp(dropout=0.5, plain=True))) == {3}
    for form in ("perturb", "multistep"):
        got = algorithms(mlp(dropout=0.5, sigma=0.1, form=form, norm="l2", steps=1))
        # At least the clean and the perturbed pass's dropout masks.
        assert len(got) >= 2 and set(got) == {1}, (form, got)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's tf.function")
def test_tensorflow_traces_the_steps_once(classification_data):
    """Keras's TF trainer, with no distribution strategy set, builds the
    compiled metrics and the optimizer's slots inside the first trace of
    its step, and their new variables make tf.function trace it again.
    GradRegModel builds them first, as Keras does on JAX and torch: `fit`
    and a fresh model's `evaluate` trace their step once."""
    x, y = classification_data

    def counting(model, name):
        traces, step = [], getattr(model, name)

        def counted(data):
            traces.append(name)
            return step(data)

        setattr(model, name, counted)
        return traces

    def compiled():
        model = mlp(norm="l2", sigma=0.1)
        model.compile(
            keras.optimizers.Adam(1e-3),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    model = compiled()
    traces = counting(model, "train_step")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert traces == ["train_step"]
    model = compiled()
    traces = counting(model, "test_step")
    model.evaluate(x, y, batch_size=16, verbose=0)
    assert traces == ["test_step"]
