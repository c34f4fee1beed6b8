import os
import shutil
import tempfile

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def pytest_configure(config):
    """On JAX, one pytest run's compiled programs are shared through JAX's
    persistent compilation cache, in a folder of the run's own (so every
    run starts cold, as CI does). Models of the same architecture compile to
    the same XLA program, whatever their weights: the example scripts'
    members, seeds and attacks then compile once (JAX's suite alone took
    1,805 s without it, 1,019 s with it). Subprocesses inherit the folder
    through the environment."""
    if BACKEND != "jax":
        return
    import jax

    config._jax_cache = tempfile.mkdtemp(prefix="keras-gradreg-jax-cache-")
    settings = {
        "jax_compilation_cache_dir": config._jax_cache,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    if getattr(config, "_jax_cache", None):
        shutil.rmtree(config._jax_cache, ignore_errors=True)


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
