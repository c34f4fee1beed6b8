"""How step time and peak memory grow with batch size and model size.

For each (backend, network, batch size, form) one fresh process builds a
plain `keras.Model` of the network and the same network as a GradRegModel
with the form, compiles both with `jit_compile=True` (XLA on TF and JAX;
torch, if asked for, runs eagerly),
traces each once (untimed), then times them through `model.fit` in
interleaved rounds of one epoch each; the median epoch gives the step time
and the ratio to plain. TensorFlow reads a cached, pre-batched `tf.data`
pipeline (`step_cost.fit_data`); JAX reads the NumPy arrays. Networks are
the library's (`mnist_maxout_mlp`, `mnist_conv_maxout`,
`cifar10_conv_maxout`, dropout off, synthetic data).

Peak memory: on a GPU, the device allocator's peak (TF
`get_memory_info`, reset between the two models; JAX `memory_stats`, a
process-wide peak, so the form's figure is an upper bound as on CPU). On
CPU neither framework reports allocator peaks, so the process's peak
resident set size (`ru_maxrss`) is read after the plain model's stage and
again at the end; growth is over the process after import. The second
figure includes the plain model's retained buffers and XLA compilation, so
it is an upper bound for the form alone.

Usage:
    python benchmarks/scaling.py                                # CPU grid below
    python benchmarks/scaling.py --backends jax --networks cifar10 \\
        --batch-sizes 128 --width 1.0                           # one GPU cell
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

from _workers import report, run_worker
from step_cost import fit_data

FORMS = {
    "penalty l2": {"form": "penalty", "norm": "l2", "sigma": 0.5},
    "perturb linf alpha=0": {"form": "perturb", "norm": "linf", "sigma": 0.1},
    "finite_difference l2": {"form": "finite_difference", "norm": "l2", "sigma": 0.5},
}
NETWORKS = ("mlp", "mnist_conv", "cifar10")


def build(network, regularizer, width):
    import keras

    from keras_gradreg import models

    if network == "mlp":
        model = models.mnist_maxout_mlp(
            input_dropout=0.0, hidden_dropout=0.0, **(regularizer or {})
        )
        shape = (28, 28)
    elif network == "mnist_conv":
        model = models.mnist_conv_maxout(dropout=0.0, **(regularizer or {}))
        shape = (28, 28, 1)
    else:
        model = models.cifar10_conv_maxout(
            width=width, dropout=0.0, **(regularizer or {})
        )
        shape = (32, 32, 3)
    if regularizer is None:  # the same layers as a plain keras.Model
        model = keras.Model(model.inputs, model.outputs)
    return model, shape


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DeviceMemory:
    """Allocator peak on a GPU (None on CPU, where RSS is used instead)."""

    def __init__(self, backend):
        self.backend = backend
        self.gpu = False
        if backend == "tensorflow":
            import tensorflow as tf

            self.tf = tf
            self.gpu = bool(tf.config.list_physical_devices("GPU"))
        elif backend == "jax":
            import jax

            self.device = jax.devices()[0]
            self.gpu = self.device.platform == "gpu"

    def reset(self):
        if self.gpu and self.backend == "tensorflow":
            self.tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mib(self):
        if not self.gpu:
            return None
        if self.backend == "tensorflow":
            info = self.tf.config.experimental.get_memory_info("GPU:0")
            return info["peak"] / 2**20
        return self.device.memory_stats()["peak_bytes_in_use"] / 2**20


def run_cell(network, batch, form, rounds, steps, width):
    import keras
    import numpy as np

    backend = keras.backend.backend()
    memory = DeviceMemory(backend)
    base_rss = _peak_rss_mib()
    models, peaks = {}, {}
    for name, regularizer in (("plain", None), (form, FORMS[form])):
        keras.utils.set_random_seed(0)
        memory.reset()
        model, shape = build(network, regularizer, width)
        model.compile(
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            # torch.compile cannot differentiate twice: torch runs eagerly.
            jit_compile=backend != "torch",
        )
        rng = np.random.default_rng(0)
        x = rng.random((steps * batch, *shape), dtype=np.float32)
        data = fit_data(x, rng.integers(0, 10, steps * batch), batch)
        model.fit(**data, epochs=1, verbose=0)  # compile: untimed
        models[name] = model
        device_peak = memory.peak_mib()
        peaks[name] = (
            device_peak if device_peak is not None else _peak_rss_mib() - base_rss
        )
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(**data, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / steps)
    step = {name: statistics.median(t) for name, t in times.items()}
    if not memory.gpu:  # the end-of-run RSS covers the timed epochs too
        peaks[form] = _peak_rss_mib() - base_rss
    return {
        "backend": backend,
        "device": "gpu" if memory.gpu else "cpu",
        "network": network,
        "width": width if network == "cifar10" else 1.0,
        "batch": batch,
        "form": form,
        "plain_step_ms": 1e3 * step["plain"],
        "form_step_ms": 1e3 * step[form],
        "ratio": step[form] / step["plain"],
        "examples_per_s": batch / step[form],
        "plain_peak_mib": peaks["plain"],
        "form_peak_mib": peaks[form],
        "memory": "device allocator peak" if memory.gpu else "peak RSS growth",
    }


def cells(args):
    """(network, batch) pairs: the batch scan on the first network, and the
    network scan at `--model-batch`."""
    pairs = [(args.networks[0], b) for b in args.batch_sizes]
    pairs += [(n, args.model_batch) for n in args.networks[1:]]
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=NETWORKS)
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=[32, 128, 512, 1024]
    )
    parser.add_argument("--model-batch", type=int, default=128)
    parser.add_argument("--forms", nargs="+", choices=tuple(FORMS), default=list(FORMS))
    parser.add_argument("--width", type=float, default=0.25, help="CIFAR-10 width")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.model_batch, *args.batch_sizes) < 1:
        parser.error(
            "--rounds, --steps, --model-batch and --batch-sizes must be >= 1. "
            f"Received: {args.rounds}, {args.steps}, {args.model_batch}, "
            f"{args.batch_sizes}"
        )
    if args.width <= 0:
        parser.error(f"--width must be > 0. Received: {args.width}")

    if args.worker:
        network, batch, form = args.worker
        result = run_cell(
            network, int(batch), form, args.rounds, args.steps, args.width
        )
        report(result)
        return

    results = []
    todo = [
        (backend, network, batch, form)
        for backend in args.backends
        for network, batch in cells(args)
        for form in args.forms
    ]
    for i, (backend, network, batch, form) in enumerate(todo, 1):
        print(
            f"[{i}/{len(todo)}] {backend} {network} b={batch} {form}", file=sys.stderr
        )
        worker_args = [
            network, batch, form, "--rounds", args.rounds, "--steps", args.steps,
            "--width", args.width,
        ]  # fmt: skip
        label = f"{backend} {network} {batch} {form}"
        env = {"KERAS_BACKEND": backend}
        results.append(run_worker(__file__, worker_args, label=label, env=env))

    print(
        "| backend | network | batch | form | plain ms/step | form ms/step "
        "| ratio | ex/s | plain peak MiB | form peak MiB |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        network = r["network"] + (f" (width {r['width']:g})" if r["width"] != 1 else "")
        print(
            f"| {r['backend']} | {network} | {r['batch']} | {r['form']} "
            f"| {r['plain_step_ms']:.1f} | {r['form_step_ms']:.1f} | {r['ratio']:.2f}x "
            f"| {r['examples_per_s']:,.0f} | {r['plain_peak_mib']:,.0f} "
            f"| {r['form_peak_mib']:,.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
