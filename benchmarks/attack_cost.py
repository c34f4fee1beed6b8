"""Wall time of robustness evaluation on the MNIST test images, ours against
an independent implementation (torchattacks) on the same network and points.

The paper's maxout MLP (`keras_gradreg.models.mnist_maxout_mlp`) is trained
for one epoch on JAX (so the attacks run on a realistic model) and saved as
a logits model taking `(1, 28, 28)` images: the same file is loaded by every
worker, so every implementation attacks bit-identical weights. Each backend
runs in its own process and times, on the first `--points` test images:

- `fgm`, `pgd`: the library's FGM and PGD-20 (one random start), each after
  one untimed call that compiles it;
- `standard`: `evaluate_robustness(attacks="standard")`, AutoAttack's
  standard version (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets,
  Square with 5000 queries; each attack on the points the previous ones
  left robust), after an untimed call on 100 images that compiles it;
- `standard-no-fab`: the same without FAB-T;
- `fab-t`: where FAB-T's cost goes: APGD-T and FAB-T timed on the points
  APGD-CE and APGD-T leave robust (those FAB-T attacks in the suite), each
  after an untimed call on the same points that compiles it, and the
  points FAB-T breaks there (what it adds to the suite before Square);
- `torchattacks` (torch backend only): the same ensemble from torchattacks
  3.5.1 (`MultiAttack([APGD(loss="ce"), APGDT(n_classes=10),
  FAB(multi_targeted=True, n_classes=10), Square(n_queries=5000)])`, 100
  steps, one restart, which also attacks only the points still robust), on
  the same Keras model as a `torch.nn.Module`;
- `pyautoattack` (torch backend only): AutoAttack's own code, packaged as
  `pyautoattack` 0.2.0 (`AutoAttack(version="standard")`, batches of 500),
  on the same model.

Needs MNIST (`$KERAS_GRADREG_DATA` or the Keras cache). The rows are printed
as a Markdown table and written as JSON with `--json`.

Usage:
    python benchmarks/attack_cost.py                     # FGM, PGD; TF, JAX
    python benchmarks/attack_cost.py --suites standard --backends tensorflow jax
    python benchmarks/attack_cost.py --suites fab-t --backends jax --points 500
    python benchmarks/attack_cost.py --suites standard torchattacks \
        --backends torch --points 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _workers import report, run_worker

EPS = {"linf": 0.1, "l2": 1.0, "l1": 10.0}


def train_logits_model(path):
    """One epoch of the maxout MLP; saves its logits on (1, 28, 28) inputs."""
    import keras

    import keras_gradreg as kg

    (x_train, y_train), _ = kg.datasets.load_mnist()
    keras.utils.set_random_seed(0)
    net = kg.models.mnist_maxout_mlp(sigma=0.0)
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    net.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
    inputs = keras.Input((1, 28, 28))
    h = keras.layers.Reshape((784,))(inputs)
    for layer in net.layers[1:-1]:
        h = layer(h)
    head = net.layers[-1]
    logits = keras.layers.Dense(10, name="logits")
    outputs = logits(h)
    logits.set_weights(head.get_weights())
    keras.Model(inputs, outputs).save(path)


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def measure(path, suites, norms, points, steps):
    import keras

    import keras_gradreg as kg

    keras.config.set_image_data_format("channels_first")  # Square's windows
    model = keras.saving.load_model(path)
    _, (x, y) = kg.datasets.load_mnist()
    x, y = x[:points].reshape(-1, 1, 28, 28), y[:points]
    return [
        {
            "suite": suite,
            "norm": norm,
            "eps": EPS[norm],
            "points": len(x),
            **_measure_one(model, x, y, suite, norm, steps),
        }  # fmt: skip
        for norm in norms
        for suite in suites
    ]


def _measure_one(model, x, y, suite, norm, steps):
    """Seconds and robust accuracy of one suite at one norm."""
    import numpy as np

    import keras_gradreg as kg

    eps = EPS[norm]
    clean = kg.attacks.correct_predictions(model, x, y)
    if suite.startswith("standard"):

        def run(n):
            return kg.evaluate_robustness(
                model, x[:n], y[:n], [norm], [eps], attacks=suite,
                checks=False, verbose=0,
            )  # fmt: skip

        run(100)  # compile
        report, seconds = _timed(run, len(x))
        return {
            "seconds": seconds,
            "robust_accuracy": report.accuracy(norm, eps),
            "per_attack": {r["attack"]: r["accuracy"] for r in report.rows},
        }
    if suite == "fab-t":
        return _fab_against_apgd_t(model, x, y, norm, eps, clean)
    if suite in REFERENCES:
        x_adv, seconds = _timed(REFERENCES[suite], model, x, y, norm, eps)
    else:
        attack = kg.attacks.FGM() if suite == "fgm" else kg.attacks.PGD(steps=steps)
        attack(model, x[:500], y[:500], norm, eps, seed=0)  # compile
        x_adv, seconds = _timed(attack, model, x, y, norm, eps)
    robust = clean & kg.attacks.correct_predictions(model, x_adv, y)
    return {"seconds": seconds, "robust_accuracy": float(np.mean(robust))}


def _fab_against_apgd_t(model, x, y, norm, eps, clean):
    """FAB-T's and APGD-T's seconds on the points the APGDs leave robust."""
    import numpy as np

    import keras_gradreg as kg

    robust = clean.copy()
    for attack in (kg.attacks.APGD(), kg.attacks.APGD(targeted=True)):
        if robust.any():
            x_adv = attack(model, x[robust], y[robust], norm, eps)
            robust[robust] = kg.attacks.correct_predictions(model, x_adv, y[robust])
    row = {"survivors": int(robust.sum())}
    if not robust.any():
        return {"seconds": 0.0, "robust_accuracy": 0.0, **row}
    xs, ys = x[robust], y[robust]
    for attack in (kg.attacks.APGD(targeted=True), kg.attacks.FAB()):
        _, first = _timed(attack, model, xs, ys, norm, eps)  # compiles
        x_adv, seconds = _timed(attack, model, xs, ys, norm, eps)
        broken = ~kg.attacks.correct_predictions(model, x_adv, ys)
        row[attack.name] = {
            "seconds": seconds, "first_call_seconds": first, "broken": int(broken.sum()),
        }  # fmt: skip
    robust[robust] = ~broken
    return {
        "seconds": row["FAB-T"]["seconds"],
        "robust_accuracy": float(np.mean(robust)),
        **row,
    }


def _torchattacks(model, x, y, norm, eps):
    import torch
    import torchattacks

    name = {"linf": "Linf", "l2": "L2"}[norm]
    ensemble = torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, norm=name, eps=eps, steps=100, loss="ce", seed=0),
            torchattacks.APGDT(model, norm=name, eps=eps, steps=100, n_classes=10, seed=0),
            torchattacks.FAB(model, norm=name, eps=eps, steps=100, n_classes=10,
                             multi_targeted=True, seed=0),
            torchattacks.Square(model, norm=name, eps=eps, n_queries=5000, seed=0),
        ]
    )  # fmt: skip
    tx, ty = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    return ensemble(tx, ty).detach().numpy()


def _pyautoattack(model, x, y, norm, eps):
    import torch
    from pyautoattack import AutoAttack

    name = {"linf": "Linf", "l2": "L2"}[norm]
    adversary = AutoAttack(model, norm=name, eps=eps, version="standard", seed=0)
    tx, ty = torch.tensor(x), torch.tensor(y, dtype=torch.long)
    x_adv, _ = adversary.run_standard_evaluation(tx, ty, batch_size=500)
    return x_adv.detach().numpy()


#: The independent implementations, on the torch backend's model.
REFERENCES = {"torchattacks": _torchattacks, "pyautoattack": _pyautoattack}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument(
        "--suites", nargs="+", default=["fgm", "pgd"],
        choices=("fgm", "pgd", "standard", "standard-no-fab", "fab-t", *REFERENCES),
    )  # fmt: skip
    parser.add_argument("--norms", nargs="+", default=["linf", "l2"])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rows = measure(args.worker, args.suites, args.norms, args.points, args.steps)
        report(rows)
        return
    references = [s for s in args.suites if s in REFERENCES]
    if references and args.backends != ["torch"]:
        parser.error(
            f"--suites {references[0]} runs on the torch backend only: pass "
            f"--backends torch. Received: --backends {' '.join(args.backends)}"
        )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "maxout_logits.keras")
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
        code = f"import attack_cost; attack_cost.train_logits_model({path!r})"
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )  # fmt: skip
        for backend in args.backends:
            rows = run_worker(
                __file__,
                [path, "--steps", args.steps, "--points", args.points,
                 "--suites", *args.suites, "--norms", *args.norms],
                label=backend, env={"KERAS_BACKEND": backend},
            )  # fmt: skip
            results.extend({"backend": backend, **row} for row in rows)
    print("| backend | suite | norm | eps | points | seconds | robust accuracy |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['backend']} | {r['suite']} | {r['norm']} | {r['eps']:g} | "
            f"{r['points']} | {r['seconds']:.1f} | {r['robust_accuracy']:.2%} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
