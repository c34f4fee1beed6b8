"""One GradRegModel step on N replicas against the same step on one device.

Run by `tests/training/test_distributed.py` in subprocesses, because the device
layout (two logical CPUs for TensorFlow, `XLA_FLAGS` host devices for JAX,
`TF_CONFIG` for a worker) must be fixed before the framework starts.

    python tests/distributed_check.py mirrored OUT          # TF, 2 logical CPUs
    python tests/distributed_check.py jax OUT               # JAX, 2 host devices
    python tests/distributed_check.py reference OUT         # any backend, 1 device
    python tests/distributed_check.py worker OUT            # one MWMS worker
    python tests/distributed_check.py torch OUT             # one torch.distributed process

Each case trains one step of SGD on the same global batch of 8 from the same
initial weights; `OUT/<mode>.npz` holds the weights after the step, per case.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

GLOBAL_BATCH = 8
REPLICAS = 2
# (name, regularizer arguments, sample weights?): every form, and alpha both
# zero (the perturb form then skips the clean weight gradient) and not.
CASES = (
    ("plain", dict(sigma=0.0), False),
    ("penalty-l2", dict(norm="l2", sigma=0.5, form="penalty"), True),
    ("penalty-linf", dict(norm="linf", sigma=0.1, form="penalty", alpha=0.5), False),
    ("perturb-linf", dict(norm="linf", sigma=0.1, form="perturb", alpha=0.5), False),
    ("perturb-l2-alpha0", dict(norm="l2", sigma=0.5, form="perturb"), True),
    ("fd-l1", dict(norm="l1", sigma=1.0, form="finite_difference", fd_step=0.1), False),
)


def data():
    rng = np.random.default_rng(0)
    x = rng.random((GLOBAL_BATCH, 6)).astype("float32")
    y = rng.integers(0, 3, GLOBAL_BATCH).astype("int32")
    w = rng.uniform(0.5, 1.5, GLOBAL_BATCH).astype("float32")
    return x, y, w


def build(regularizer):
    import keras

    import keras_gradreg as kg

    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    model = kg.GradRegModel(inputs, outputs, **regularizer)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.5),
        loss="sparse_categorical_crossentropy",
    )
    return model


def one_step(model, with_weights, dataset=None):
    x, y, w = data()
    if dataset is not None:
        model.fit(dataset, epochs=1, verbose=0)
    else:
        model.fit(
            x,
            y,
            sample_weight=w if with_weights else None,
            batch_size=GLOBAL_BATCH,
            shuffle=False,
            verbose=0,
        )
    return [np.asarray(v) for v in model.get_weights()]


def save(out, mode, results):
    flat = {f"{name}/{i}": v for name, ws in results.items() for i, v in enumerate(ws)}
    np.savez(Path(out) / f"{mode}.npz", **flat)


def initial_weights():
    """The same starting point for every mode (built with the same seed)."""
    return {name: build(args).get_weights() for name, args, _ in CASES}


def run_reference(out):
    start = initial_weights()
    results = {}
    for name, args, with_weights in CASES:
        model = build(args)
        model.set_weights(start[name])
        results[name] = one_step(model, with_weights)
    save(out, "reference", results)
    save(out, "initial", start)


def run_mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    assert strategy.num_replicas_in_sync == REPLICAS
    start = initial_weights()
    results = {}
    for name, args, with_weights in CASES:
        with strategy.scope():
            model = build(args)
        model.set_weights(start[name])
        results[name] = one_step(model, with_weights)
    save(out, "mirrored", results)


def run_jax(out):
    import jax
    import keras

    devices = jax.devices()
    assert len(devices) == REPLICAS, devices
    start = initial_weights()
    results = {}
    data_parallel = keras.distribution.DataParallel(devices=devices)
    mesh = keras.distribution.DeviceMesh((1, REPLICAS), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["hidden/kernel"] = (None, "model")  # columns split over devices
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    for label, distribution in (("data", data_parallel), ("model", model_parallel)):
        keras.distribution.set_distribution(distribution)
        for name, args, with_weights in CASES:
            model = build(args)
            model.set_weights(start[name])
            results[f"{label}-{name}"] = one_step(model, with_weights)
        keras.distribution.set_distribution(None)
    kernel = model.get_layer("hidden").kernel.value
    with open(Path(out) / "jax_layout.json", "w") as f:
        json.dump({"hidden_kernel_sharding": str(kernel.sharding)}, f)
    save(out, "jax", results)


def run_worker(out):
    """One MultiWorkerMirroredStrategy worker (`TF_CONFIG` set by the test):
    it feeds its own half of the global batch; the chief saves the weights."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    per_worker = GLOBAL_BATCH // strategy.num_replicas_in_sync
    start = dict(np.load(Path(out) / "initial.npz"))
    results = {}
    for name, args, with_weights in CASES:
        x, y, w = data()
        part = slice(task * per_worker, (task + 1) * per_worker)
        columns = (x[part], y[part]) + ((w[part],) if with_weights else ())

        def dataset_fn(context, columns=columns):
            return tf.data.Dataset.from_tensor_slices(columns).batch(per_worker)

        dataset = strategy.distribute_datasets_from_function(dataset_fn)
        with strategy.scope():
            model = build(args)
        count = len(model.get_weights())
        model.set_weights([start[f"{name}/{i}"] for i in range(count)])
        results[name] = one_step(model, with_weights, dataset=dataset)
    # Keras's evaluate reduces scalar logs across workers too.
    loss = model.evaluate(dataset, verbose=0)
    if task == 0:
        save(out, "worker", results)
        with open(Path(out) / "worker_evaluate.json", "w") as f:
            json.dump({"loss": float(loss)}, f)


def run_torch_process(out):
    """One of two torch.distributed processes (gloo; `RANK`, `WORLD_SIZE`,
    `MASTER_ADDR`, `MASTER_PORT` set by the test): records what `fit` says."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        model = build(dict(norm="l2", sigma=0.5))
        x, y, _ = data()
        try:
            model.fit(x, y, verbose=0)
            message = "trained"
        except RuntimeError as error:
            message = str(error)
        rank = dist.get_rank()
        (Path(out) / f"torch-{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {
        "reference": run_reference,
        "mirrored": run_mirrored,
        "jax": run_jax,
        "worker": run_worker,
        "torch": run_torch_process,
    }[mode](out)
