"""Where the perturb form's time goes: compare its step with its parts.

Pass accounting predicts perturb (alpha=0) = the sigma=0 step (plain training
plus the input gradient) + one extra forward pass. This times, in one process
and interleaved, plain `fit`, the sigma=0 `fit`, the perturb `fit`, and a
forward pass (`predict`, an upper bound: it includes the predict loop) on the
maxout MLP shape of `step_cost.py`.

Usage:
    KERAS_BACKEND=jax python benchmarks/perturb_decomposition.py
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np
from step_cost import build


def main(rounds: int = 5, steps: int = 100, batch: int = 128):
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    models = {}
    for name, regularizer in [
        ("plain", None),
        ("sigma=0", {"sigma": 0.0}),
        ("perturb l2", {"form": "perturb", "norm": "l2"}),
    ]:
        keras.utils.set_random_seed(0)
        model = build(regularizer)
        model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # trace
        models[name] = model
    models["plain"].predict(x, batch_size=batch, verbose=0)
    times = {name: [] for name in [*models, "forward (predict)"]}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        models["plain"].predict(x, batch_size=batch, verbose=0)
        times["forward (predict)"].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(
            f"{name:<18} {value:.3f} s per {steps} steps  {value / median['plain']:.2f}x plain"
        )
    predicted = (median["sigma=0"] + median["forward (predict)"]) / median["plain"]
    print(f"predicted perturb = sigma=0 + forward: at most {predicted:.2f}x plain")


if __name__ == "__main__":
    main()
