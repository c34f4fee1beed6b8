"""Small helpers shared by test modules."""

import importlib.util
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_gradreg.src.tools import datasets

ROOT = Path(__file__).resolve().parents[1]


#: The forms trained on labels with the clean loss mixed in by `alpha` (the
#: label-free member, `virtual`, has tests of its own).
LABELLED_FORMS = ("penalty", "perturb", "finite_difference", "multistep")


def write_fake_mnist(folder, n=64, n_test=None):
    """Writes a random `mnist.npz` in Keras's layout: n training images and
    `n_test` (default n // 2) test images."""
    n_test = n // 2 if n_test is None else n_test
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / "mnist.npz",
        x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, n).astype(np.uint8),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test).astype(np.uint8),
    )


def write_image_folder(root, per_class=2):
    """Writes random 32 x 32 RGB images in CIFAR-10's folder layout:
    `root/{train,test}/<class>/NNNN.png`, `per_class` images per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in datasets.CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")


def dense_model(w, b):
    """A linear classifier `x -> x @ w + b` (logits), float32 weights."""
    inputs = keras.Input((w.shape[0],))
    model = keras.Model(inputs, keras.layers.Dense(w.shape[1])(inputs))
    model.set_weights([w.astype("float32"), b.astype("float32")])
    return model


def mnist_mlp(points=300, layer=None):
    """A 784-64-10 logits MLP on `(1, 28, 28)` images (torch's layout),
    trained two epochs on 6,000 MNIST images, and its first `points` test
    images and labels. `layer`, if given, is applied after the hidden
    layer (e.g. a dropout that stays on at inference)."""
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = datasets.load_mnist()
    x, x_test = x[:6000, None], x_test[:points, None]
    inputs = keras.Input((1, 28, 28))
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    h = h if layer is None else layer(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y[:6000], epochs=2, batch_size=100, verbose=0)
    return model, x_test, y_test[:points]


def compile_(model, lr=0.01, **kwargs):
    """Compiles `model` with plain SGD at `lr` and sparse crossentropy."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **kwargs,
    )
    return model


def fit_and_reload(folder, form, hidden=8, logits=False, **regularizer):
    """Trains a small classifier of 6 inputs and 3 classes with `form` for
    one epoch on random data, saves it to `folder` and loads it back.

    Returns:
        `(history, model, loaded)`: `fit`'s history dict, the model and its
        reloaded copy.
    """
    from keras_gradreg import GradRegModel

    inputs = keras.Input((6,))
    h = keras.layers.Dense(hidden, activation="tanh")(inputs) if hidden else inputs
    outputs = keras.layers.Dense(3, activation=None if logits else "softmax")(h)
    model = GradRegModel(inputs, outputs, form=form, **regularizer)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    x = np.random.default_rng(0).random((16, 6)).astype("float32")
    history = model.fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    model.save(folder / "m.keras")
    return history.history, model, keras.saving.load_model(folder / "m.keras")


#: Skips a test that needs the real MNIST: `mnist.npz` where the loaders look
#: (`$KERAS_GRADREG_DATA` first; CI points it at the shared copy).
requires_mnist = pytest.mark.skipif(
    datasets.find_dataset_file("mnist.npz") is None,
    reason="no local mnist.npz (set $KERAS_GRADREG_DATA)",
)


def on_one_backend(tested_elsewhere, backend="jax"):
    """Marks an end-to-end test of a backend-agnostic script, run on one
    backend only: JAX by default (the paper runs' backend), torch for the
    scripts whose tiny runs are mostly compilation elsewhere (its eager
    steps take half the time), which also balances the per-backend test
    runs. `tested_elsewhere` names where the library code the script calls
    is tested on every backend."""
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"a backend-agnostic script, run on {backend}: {tested_elsewhere}",
    )


def import_example(name):
    """Loads `examples/<name>.py`, a script rather than a package module, as
    the module `examples.<name>` (once per test run)."""
    qualified = f"examples.{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            qualified, ROOT / "examples" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]
