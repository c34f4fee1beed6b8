import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


@pytest.fixture
def float64():
    """Runs a test with Keras's default float type set to float64."""
    previous = keras.config.floatx()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    # The global policy is cached once a layer exists: set it too.
    keras.config.set_dtype_policy("float64")
    if BACKEND == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    yield
    keras.config.set_floatx(previous)
    keras.config.set_dtype_policy(previous_policy)
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
