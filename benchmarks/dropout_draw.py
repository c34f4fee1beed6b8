"""What one dropout draw costs under TensorFlow's XLA on CPU, by sampler.

The comparison with Neural Structured Learning (`vs_legacy_adversarial.py
--no-dropout`) puts TensorFlow's remaining gap in the dropout masks; this
times the draw alone: one 128 x 784 mask (the maxout MLP's input dropout at
batch 128), compiled with `jit_compile=True` and without, for the samplers
Keras, keras_gradreg and legacy tf.keras use.

Usage (pause other work on the machine first):
    KERAS_BACKEND=tensorflow python benchmarks/dropout_draw.py
"""

from __future__ import annotations

import argparse
import time

import tensorflow as tf


def samplers(shape, rate=0.2):
    seed = tf.constant([1, 2], tf.int32)
    x = tf.random.stateless_uniform(shape, seed)

    def by_hand():
        u = tf.random.stateless_uniform(shape, seed, alg="philox")
        return tf.where(u >= rate, x * (1.0 / (1.0 - rate)), tf.zeros_like(x))

    return {
        "uniform, Philox (keras_gradreg's sampler)": lambda: (
            tf.random.stateless_uniform(shape, seed, alg="philox")
        ),
        "uniform, auto_select (Keras's)": lambda: tf.random.stateless_uniform(
            shape, seed
        ),
        "stateless_dropout, Philox (keras_gradreg's dropout)": lambda: (
            tf.nn.experimental.stateless_dropout(x, rate, seed, rng_alg="philox")
        ),
        "mask by hand: Philox uniform, compare, select": by_hand,
        "tf.nn.dropout, stateful (legacy tf.keras)": lambda: tf.nn.dropout(
            x, rate, seed=3
        ),
    }


def milliseconds(function, calls):
    function()
    function()
    start = time.perf_counter()
    for _ in range(calls):
        result = function()
    result.numpy()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--shape", type=int, nargs=2, default=(128, 784))
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be >= 1. Received: {args.calls}")
    print("| draw | XLA (ms) | graph, no XLA (ms) |\n|---|---:|---:|")
    for name, draw in samplers(tuple(args.shape)).items():
        xla = milliseconds(tf.function(draw, jit_compile=True), args.calls)
        graph = milliseconds(tf.function(draw), args.calls)
        print(f"| {name} | {xla:.3f} | {graph:.3f} |", flush=True)


if __name__ == "__main__":
    main()
