"""Wall time of robustness evaluation on the 10,000 MNIST test images.

The paper's maxout MLP (`keras_gradreg.models.mnist_maxout_mlp`) is trained
for one epoch (so the attack runs on a realistic model), then FGM and PGD-20
(one random start) are timed on the full test set, each after one untimed
call that compiles it. Each backend runs in its own process. Needs MNIST
(`$KERAS_GRADREG_DATA` or the Keras cache).

Usage:
    python benchmarks/attack_cost.py                        # TF and JAX
    python benchmarks/attack_cost.py --backends torch --norms linf
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(norms, steps):
    import keras

    import keras_gradreg as kg

    (x_train, y_train), (x_test, y_test) = kg.datasets.load_mnist()
    keras.utils.set_random_seed(0)
    model = kg.models.mnist_maxout_mlp(sigma=0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
    eps = {"linf": 0.1, "l2": 1.0, "l1": 10.0}
    rows = []
    for norm in norms:
        for attack in (kg.attacks.FGM(), kg.attacks.PGD(steps=steps)):
            name = attack.name
            attack(
                model, x_test[:500], y_test[:500], norm, eps[norm], seed=0
            )  # compile
            start = time.perf_counter()
            x_adv = attack(model, x_test, y_test, norm, eps[norm], seed=0)
            seconds = time.perf_counter() - start
            accuracy = kg.classification_accuracy(model, x_adv, y_test)
            rows.append(
                {
                    "attack": name,
                    "norm": norm,
                    "eps": eps[norm],
                    "seconds": seconds,
                    "robust_accuracy": accuracy,
                }
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--norms", nargs="+", default=["linf", "l2"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.norms, args.steps)))
        return
    print(
        "| backend | attack | norm | eps | seconds (10,000 images) | robust accuracy |"
    )
    print("|---|---|---|---:|---:|---:|")
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        command = [sys.executable, __file__, "--worker", "--steps", str(args.steps)]
        result = subprocess.run(
            command + ["--norms", *args.norms],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        for row in json.loads(result.stdout.strip().splitlines()[-1]):
            print(
                f"| {backend} | {row['attack']} | {row['norm']} | {row['eps']:g} "
                f"| {row['seconds']:.1f} | {row['robust_accuracy']:.2%} |"
            )


if __name__ == "__main__":
    main()
