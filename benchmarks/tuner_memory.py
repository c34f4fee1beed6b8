"""Resident memory across KerasTuner trials with a robust objective.

Every trial builds a GradRegModel, trains it and attacks the validation
set (`RobustAccuracy`, PGD-10), which compiles the attack for that model.
The compiled attacks belong to the model, so a finished trial's model and
programs are freed: resident memory should level off after the first
trials instead of growing with their number. Prints the RSS after each
trial and the growth from trial 5 to the last. Needs MNIST
(`$KERAS_GRADREG_DATA` or the Keras cache).

Usage:
    KERAS_BACKEND=jax python benchmarks/tuner_memory.py --trials 20
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile


def rss_mib() -> float:
    """Current resident set size in MiB (Linux `/proc/self/statm`)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument(
        "--model",
        choices=("functional", "subclassed"),
        default="subclassed",
        help="a subclassed GradRegModel's attack closes over the model itself",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import keras
    import keras_tuner

    import keras_gradreg as kg

    (x, y), (x_val, y_val), _ = kg.datasets.load_mnist(validation_size=10000)
    x, y = x[: args.examples], y[: args.examples]
    x_val, y_val = x_val[:500], y_val[:500]

    class SubclassedMLP(kg.GradRegModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.flatten = keras.layers.Flatten()
            self.hidden = kg.layers.Maxout(32, 2)
            self.head = keras.layers.Dense(10, activation="softmax")

        def call(self, x):
            return self.head(self.hidden(self.flatten(x)))

    def build(hp):
        if args.model == "subclassed":
            return SubclassedMLP()
        return kg.models.mnist_maxout_mlp(units=32, pieces=2)

    hypermodel = kg.tuning.GradRegHyperModel(build, robust_subset=200)
    rss = []

    class Record(keras_tuner.Tuner):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            gc.collect()
            rss.append(rss_mib())
            print(f"trial {len(rss):3d}: RSS {rss[-1]:.0f} MiB", flush=True)

    class RecordingSearch(Record, keras_tuner.RandomSearch):
        pass

    with tempfile.TemporaryDirectory() as folder:
        tuner = RecordingSearch(
            hypermodel,
            objective=kg.tuning.objective("val_robust_score"),
            max_trials=args.trials,
            directory=folder,
            project_name="memory",
            seed=0,
        )
        tuner.search(
            x, y, epochs=1, batch_size=128, validation_data=(x_val, y_val), verbose=0
        )
    start = min(4, len(rss) - 1)
    result = {
        "backend": keras.backend.backend(),
        "rss_mib": rss,
        "growth_from_trial_5_mib": rss[-1] - rss[start],
        "growth_per_trial_mib": (rss[-1] - rss[start]) / max(1, len(rss) - 1 - start),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
