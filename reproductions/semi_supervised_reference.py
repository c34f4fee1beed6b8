"""Virtual adversarial training written by hand in JAX: an independent check
of the label-free member on the 100-label MNIST benchmark.

Nothing here uses Keras's training loop or keras_gradreg's objective; only
the data (`keras_gradreg.datasets`) and the batches
(`keras_gradreg.semi_supervised.SemiSupervisedBatches`, so a run sees the
same rows as `examples/semi_supervised_mnist.py`). The step is Miyato et al.'s
(2018), with one power iteration:

    d ~ N(0, I),  g = d/dr sum_i KL(p(x_i) || p(x_i + r)) at r = xi d/|d|,
    r_i = sigma g_i / |g_i|,
    loss = mean_labeled CE + mean_i KL(p(x_i) || p(x_i + r_i)),

p(x) held constant, Adam. Two ways to place the rows, which is what the
runs in docs/results.md compare:

- `--passes mixed` (the library's layout): one forward pass over the labeled
  and unlabeled rows together, the divergence on every row;
- `--passes separate` (Miyato et al.'s code): the labeled rows in a pass of
  their own for the cross-entropy, the divergence on the unlabeled rows
  only, in their own passes. With `--batch-norm` each pass normalizes by its
  own batch statistics.

`--batch-norm` puts batch normalization (without bias, with scale and
offset) after every linear layer including the last, as Miyato et al.'s
network. Validation uses population statistics from 10,000 training images.

Usage (docs/results.md has the runs):
    KERAS_BACKEND=jax python -m reproductions.semi_supervised_reference --batch-norm --passes separate
    python -m reproductions.semi_supervised_reference --epochs 1 --steps-per-epoch 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import keras_gradreg as kg
from keras_gradreg.semi_supervised import SemiSupervisedBatches, balanced_labels

from .run_records import refuse_non_positive

EPSILON_BN = 1e-3


def init_params(widths, batch_norm: bool, key):
    """Glorot-uniform weights; zero biases, or BN scale 1 and offset 0."""
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        key, draw = jax.random.split(key)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(draw, (fan_in, fan_out), minval=-limit, maxval=limit)
        extra = (jnp.ones(fan_out), jnp.zeros(fan_out)) if batch_norm else (
            jnp.zeros(fan_out),
        )  # fmt: skip
        params.append((w, *extra))
    return params


def logits(params, x, statistics=None, collect=None):
    """The MLP's logits. With batch norm, `statistics` (one (mean, var) per
    layer) replaces the batch's own; `collect` receives the batch's."""
    h = x
    for i, layer in enumerate(params):
        h = h @ layer[0]
        if len(layer) == 3:
            mean, var = (jnp.mean(h, 0), jnp.var(h, 0)) if statistics is None else (
                statistics[i]
            )  # fmt: skip
            if collect is not None:
                collect.append((mean, var))
            h = layer[1] * (h - mean) / jnp.sqrt(var + EPSILON_BN) + layer[2]
        else:
            h = h + layer[1]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def kl_to(log_p, moved_logits):
    """KL(p || softmax(moved_logits)) per row, log p held constant."""
    return jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(moved_logits)), -1)


def make_loss(args, n_labeled_rows):
    clip = (lambda z: jnp.clip(z, 0.0, 1.0)) if args.clip else (lambda z: z)

    def loss(params, x, y, weight, key):
        if args.passes == "separate":
            log_q = jax.nn.log_softmax(logits(params, x[:n_labeled_rows]))
            labeled = y[:n_labeled_rows, None]
            supervised = -jnp.mean(jnp.take_along_axis(log_q, labeled, 1))
            x = x[n_labeled_rows:]
            log_p = jax.nn.log_softmax(logits(params, x))
        else:
            log_p = jax.nn.log_softmax(logits(params, x))
            ce = -jnp.take_along_axis(log_p, y[:, None], 1)[:, 0]
            supervised = jnp.mean(weight * ce)
        log_p = jax.lax.stop_gradient(log_p)
        d = jax.random.normal(key, x.shape)
        d = d / jnp.linalg.norm(d, axis=1, keepdims=True)
        fixed = jax.lax.stop_gradient(params)
        g = jax.grad(lambda r: jnp.sum(kl_to(log_p, logits(fixed, clip(x + r)))))(
            args.xi * d
        )
        g = jax.lax.stop_gradient(g)
        r = (
            args.sigma
            * g
            / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        )
        divergence = jnp.mean(kl_to(log_p, logits(params, clip(x + r))))
        return supervised + divergence, (supervised, divergence)

    return loss


def make_step(loss, learning_rate):
    """One Adam step (beta 0.9 / 0.999, epsilon 1e-7, as Keras's)."""

    @jax.jit
    def step(params, moments, count, x, y, weight, key):
        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(
            params, x, y, weight, key
        )
        count = count + 1
        first, second = moments
        first = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, first, grads)
        second = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, second, grads)
        rate = learning_rate(count - 1)

        def update(p, m, v):
            m_hat, v_hat = m / (1 - 0.9**count), v / (1 - 0.999**count)
            return p - rate * m_hat / (jnp.sqrt(v_hat) + 1e-7)

        params = jax.tree.map(update, params, first, second)
        return params, (first, second), count, terms

    return step


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=500)
    parser.add_argument("--labeled-batch", type=int, default=100)
    parser.add_argument("--unlabeled-batch", type=int, default=250)
    parser.add_argument("--widths", type=int, nargs="+", default=[1200, 1200])
    parser.add_argument(
        "--sigma", type=float, default=0.3, help="l2 radius; 0 = supervised only"
    )
    parser.add_argument("--xi", type=float, default=1e-2)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--decay", type=float, default=0.9, help="learning-rate factor per epoch"
    )
    parser.add_argument("--passes", choices=("mixed", "separate"), default="separate")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--clip", action="store_true", help="clip x + r to [0, 1]")
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file of the curve"
    )
    args = parser.parse_args(argv)
    refuse_non_positive(
        parser, args, "epochs", "steps_per_epoch", "labeled_batch", "unlabeled_batch",
        "widths", "xi", "learning_rate", "decay", "validation",
    )  # fmt: skip
    if args.sigma < 0:
        parser.error(f"argument --sigma must be >= 0. Received: {args.sigma}")
    (x_train, y_train), _ = kg.datasets.load_mnist()
    x_train = x_train.reshape(len(x_train), -1)
    x_val, y_val = x_train[-args.validation :], y_train[-args.validation :]
    x_train, y_train = x_train[: -args.validation], y_train[: -args.validation]
    labeled = balanced_labels(y_train, 10, seed=args.seed)
    batches = SemiSupervisedBatches(
        x_train[labeled], y_train[labeled], x_train,
        labeled_batch_size=args.labeled_batch, unlabeled_batch_size=args.unlabeled_batch,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed,
    )  # fmt: skip
    key = jax.random.PRNGKey(args.seed)
    params = init_params([784, *args.widths, 10], args.batch_norm, key)
    moments = (jax.tree.map(jnp.zeros_like, params),) * 2
    count = jnp.zeros((), jnp.int32)
    steps = len(batches)
    step = make_step(
        make_loss(args, args.labeled_batch),
        lambda t: args.learning_rate * args.decay ** (t // steps),
    )
    population = x_train[:10000]
    curve, divergences, start = [], [], time.perf_counter()
    for epoch in range(args.epochs):
        terms = []
        for index in range(steps):
            x, y, weight = batches[index]
            key, draw = jax.random.split(key)
            params, moments, count, values = step(
                params, moments, count, x, y, weight, draw
            )
            terms.append([float(v) for v in values])
        batches.on_epoch_end()
        statistics = None
        if args.batch_norm:
            statistics = []
            logits(params, population, collect=statistics)
        accuracy = float(
            jnp.mean(jnp.argmax(logits(params, x_val, statistics), -1) == y_val)
        )
        curve.append(accuracy)
        supervised, divergence = np.mean(terms, axis=0)
        divergences.append(float(divergence))
        print(
            f"epoch {epoch + 1}: cross-entropy {supervised:.4f}, divergence "
            f"{divergence:.4f}, validation accuracy {accuracy:.2%} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    result = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "validation_accuracy": curve,
        "divergence": divergences,
        "seconds": time.perf_counter() - start,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
