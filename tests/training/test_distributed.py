"""Distribution on Keras's and TensorFlow's own engines.

The property that matters: for the same global batch and starting weights,
one step on N replicas gives the weights of one step on one device, for
every form. That holds only if the loss *and* the per-example penalty are
averaged over the global batch, not per replica. The device layouts are
fixed before a framework starts, so each run is a subprocess of
`tests/distributed_check.py` with a bounded run time.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests import distributed_check as check
from tests.conftest import BACKEND
from tests.helpers import ROOT

SCRIPT = str(ROOT / "tests" / "distributed_check.py")
TIMEOUT = 240  # seconds, per subprocess


def _env(**extra):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT), **extra)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _run(mode, out, **extra):
    result = subprocess.run(
        [sys.executable, SCRIPT, mode, str(out)],
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _load(path):
    """`{case: [weights...]}` from a file written by `distributed_check.save`."""
    flat = np.load(path)
    out = {}
    for key in sorted(
        flat.files, key=lambda k: (k.split("/")[0], int(k.split("/")[1]))
    ):
        out.setdefault(key.split("/")[0], []).append(flat[key])
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Initial weights and the one-device step, per case."""
    out = tmp_path_factory.mktemp("distributed")
    _run("reference", out)
    return out, _load(out / "initial.npz"), _load(out / "reference.npz")


@pytest.mark.skipif(
    BACKEND == "torch", reason="the reference of the TF and JAX distribution tests"
)
def test_reference_cases_are_sharp(reference):
    """Each regularized step moves the weights away from the plain step, so
    an equality below could not hold with the penalty lost or mis-scaled."""
    _, initial, steps = reference
    for name, args, _ in check.CASES:
        moved = max(np.abs(a - b).max() for a, b in zip(steps[name], initial[name]))
        assert moved > 1e-3, name
        if name != "plain":
            off = max(np.abs(a - b).max() for a, b in zip(steps[name], steps["plain"]))
            assert off > 20 * _tolerance(args), (name, off)


def _tolerance(args):
    """Float32 summation order differs across replicas; the finite-difference
    form multiplies that rounding by sigma / h."""
    if args.get("form") == "finite_difference":
        return 2e-6 * args["sigma"] / args["fd_step"]
    return 2e-6


def _assert_same_steps(distributed, steps, prefix=""):
    for name, args, _ in check.CASES:
        for a, b in zip(distributed[prefix + name], steps[name]):
            np.testing.assert_allclose(a, b, atol=_tolerance(args), err_msg=name)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_step_equals_one_device_step(reference):
    out, _, steps = reference
    _run("mirrored", out)
    _assert_same_steps(_load(out / "mirrored.npz"), steps)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_processes(mode, out, envs):
    """Runs one `distributed_check.py` process per env, all at once, with a
    bounded run time; always kills what is left."""
    processes = []
    try:
        for env in envs:
            processes.append(
                subprocess.Popen(
                    [sys.executable, SCRIPT, mode, str(out)],
                    env=_env(**env),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            _, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_multi_worker_mirrored_strategy_step_equals_one_device_step(reference):
    out, _, steps = reference
    workers = [f"127.0.0.1:{port}" for port in _free_ports(check.REPLICAS)]
    configs = [
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        for i in range(check.REPLICAS)
    ]
    _run_processes("worker", out, [{"TF_CONFIG": json.dumps(c)} for c in configs])
    _assert_same_steps(_load(out / "worker.npz"), steps)
    evaluated = json.loads((out / "worker_evaluate.json").read_text())["loss"]
    assert np.isfinite(evaluated) and evaluated > 0.0


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution")
def test_jax_data_and_model_parallel_step_equals_one_device_step(reference):
    out, _, steps = reference
    flags = f"--xla_force_host_platform_device_count={check.REPLICAS}"
    _run("jax", out, XLA_FLAGS=flags)
    distributed = _load(out / "jax.npz")
    _assert_same_steps(distributed, steps, prefix="data-")
    _assert_same_steps(distributed, steps, prefix="model-")
    layout = json.loads((out / "jax_layout.json").read_text())
    assert "model" in layout["hidden_kernel_sharding"]  # really sharded


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's refusal")
class TestTorchRefusesDistribution:
    def _model(self):
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(2, activation="softmax")(inputs)
        model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.1)
        model.compile("sgd", "sparse_categorical_crossentropy")
        return model

    def _fit(self, model):
        x, y = np.zeros((4, 3), "float32"), np.zeros(4, "int32")
        return model.fit(x, y, verbose=0).history

    def test_torch_distributed_process_group(self, tmp_path):
        (port,) = _free_ports(1)
        common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        envs = [
            dict(common, RANK=str(rank), WORLD_SIZE=str(check.REPLICAS))
            for rank in range(check.REPLICAS)
        ]
        _run_processes("torch", tmp_path, envs)
        for rank in range(check.REPLICAS):
            message = (tmp_path / f"torch-{rank}.txt").read_text()
            assert "world_size=2" in message, message

    def test_keras_distribution(self):
        model = self._model()
        distribution = keras.distribution.DataParallel(devices=["cpu:0"])
        keras.distribution.set_distribution(distribution)
        try:
            with pytest.raises(RuntimeError, match="DataParallel"):
                self._fit(model)
        finally:
            keras.distribution.set_distribution(None)

    def test_one_process_trains(self):
        history = self._fit(self._model())  # no process group or distribution
        assert np.isfinite(history["loss"][0])
