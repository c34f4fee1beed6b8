import os
import shutil
import tempfile

import numpy as np
import pytest


def _compile_without_llvm_optimizations():
    """XLA compiles the suite's programs (every JAX step and attack,
    TensorFlow's attacks and `jit_compile=True` steps) at LLVM's level 0.
    The tests check values, not speed, and their programs are small, so
    compiling was most of their time: level 0 took JAX's run of the core
    tests from 1,096 s to 711 s and of the others from 1,034 s to 714 s,
    and TensorFlow's APGD tests from 201 s to 105 s, with the same
    results. Set before the backends load, so that XLA reads it;
    subprocesses inherit it; a level already in `XLA_FLAGS` is kept."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


_compile_without_llvm_optimizations()

import keras  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_configure(config):
    """On JAX, compiled programs are shared through JAX's persistent
    compilation cache. Models of the same architecture compile to the same
    XLA program, whatever their weights: the example scripts' members, seeds
    and attacks then compile once (JAX's suite alone took 1,805 s without
    it, 1,019 s with it). The folder is `$JAX_COMPILATION_CACHE_DIR` where
    set: `make test` gives all its JAX runs one folder, emptied when it
    starts, so the Keras-floor run reuses the core tests' programs (220 s
    alone without them, 134 s with them). Otherwise it is a folder of the
    run's own, removed at the end, and the run starts cold. Subprocesses
    inherit the folder through the environment."""
    if BACKEND != "jax":
        return
    import jax

    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not folder:
        folder = config._jax_cache = tempfile.mkdtemp(prefix="keras-gradreg-jax-")
    settings = {
        "jax_compilation_cache_dir": folder,
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
