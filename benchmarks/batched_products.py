"""One weight-gradient product over 2B rows against two over B (JAX).

The performance issue asks whether the clean and the perturbed pass would
be cheaper fused into one batch of 2B. Only their weight gradients could
be: the perturbed input depends on the clean pass's input gradient, so the
forwards cannot run together without recomputing the clean one. This times
`h1ᵀ d1 + h2ᵀ d2` (two products of B rows) against `[h1; h2]ᵀ [d1; d2]`
(one of 2B rows, the concatenation included) for each layer of the paper's
maxout MLP, compiled with XLA, median of 5 runs of 200 calls.

Usage:
    python benchmarks/batched_products.py [--batch 128]
"""

from __future__ import annotations

import argparse
import time

SHAPES = [(784, 1200), (240, 1200), (240, 10)]  # the maxout MLP's kernels


def _milliseconds(fn, *args, calls: int = 200) -> float:
    fn(*args).block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        out.block_until_ready()
        times.append((time.perf_counter() - start) / calls)
    return sorted(times)[2] * 1e3


def main(argv=None) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1. Received: {args.batch}")
    two = jax.jit(lambda h1, h2, d1, d2: h1.T @ d1 + h2.T @ d2)
    one = jax.jit(
        lambda h1, h2, d1, d2: jnp.concatenate([h1, h2]).T @ jnp.concatenate([d1, d2])
    )
    rng = np.random.default_rng(0)
    print("| kernel | two B-row products (ms) | one 2B-row product (ms) |")
    print("|---|---:|---:|")
    for fan_in, fan_out in SHAPES:
        h1, h2 = (rng.random((args.batch, fan_in), dtype=np.float32) for _ in "ab")
        d1, d2 = (rng.random((args.batch, fan_out), dtype=np.float32) for _ in "ab")
        arrays = [jnp.asarray(a) for a in (h1, h2, d1, d2)]
        print(
            f"| {fan_in} x {fan_out} | {_milliseconds(two, *arrays):.3f} | "
            f"{_milliseconds(one, *arrays):.3f} |"
        )


if __name__ == "__main__":
    main()
