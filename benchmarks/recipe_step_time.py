"""Seconds per training step of a CIFAR-10 recipe, and the epoch they imply.

Times `--steps` updates of `keras_gradreg.recipes.CIFAR10_RECIPES[recipe]`
(PreActResNet-18 at `--width`, batch 128, augmentation in the pipeline)
through `model.fit` on random images, after one untimed step that traces and
compiles. Reports the median wall-clock and process CPU seconds per step,
and extrapolates them to one epoch of CIFAR-10's 50,000 training images
(391 steps) and to the recipe's run: an extrapolation from a few steps, not
a measured epoch.

Usage:
    KERAS_BACKEND=jax python benchmarks/recipe_step_time.py --steps 3
    KERAS_BACKEND=jax python benchmarks/recipe_step_time.py --width 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import keras
import numpy as np

from keras_gradreg.recipes import CIFAR10_RECIPES

TRAIN_IMAGES = 50_000


class _StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # waits for the step (JAX dispatches asynchronously)
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(CIFAR10_RECIPES), default="fgsm_rs")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    recipe = CIFAR10_RECIPES[args.recipe].replace(width=args.width, epochs=1)
    n = recipe.batch_size * (args.steps + 1)
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype="float32")
    y = rng.integers(0, 10, n)
    model, fit_arguments = recipe.prepare(x, y)
    timer = _StepTimer()
    fit_arguments["callbacks"].append(timer)
    model.fit(**fit_arguments, verbose=0)
    wall = statistics.median(timer.wall[1:])
    cpu = statistics.median(timer.cpu[1:])
    steps_per_epoch = math.ceil(TRAIN_IMAGES / recipe.batch_size)
    epochs = CIFAR10_RECIPES[args.recipe].epochs
    result = {
        "recipe": args.recipe,
        "backend": keras.backend.backend(),
        "width": args.width,
        "batch_size": recipe.batch_size,
        "timed_steps": len(timer.wall) - 1,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "first_step_seconds": timer.wall[0],
        "wall_seconds_per_step": wall,
        "cpu_seconds_per_step": cpu,
        "extrapolated_wall_seconds_per_epoch": wall * steps_per_epoch,
        "extrapolated_wall_hours_per_run": wall * steps_per_epoch * epochs / 3600,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
