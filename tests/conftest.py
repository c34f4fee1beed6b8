import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


@pytest.fixture
def float64():
    """Runs a test with Keras's default float type set to float64."""
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    if BACKEND == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    yield
    keras.config.set_floatx(previous)
    if BACKEND == "jax":
        jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def classification_data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 6)).astype("float32")
    y = rng.integers(0, 3, 48).astype("int32")
    return x, y
