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
  left robust), timed twice: the first call, compilation included, and
  the second. Beside it, where the time goes: each attack's points and
  seconds against its floor, the passes it needs (`PASSES`) times the
  cost per point of one pass in a full batch (`_pass_costs`, which times
  the library's compiled programs, so the floor is this library's
  arithmetic, not the model's `predict`);
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

`--network small_cnn` attacks a small CNN trained one epoch with FGSM
(`small_cnn`) instead of the maxout MLP.

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


def maxout_mlp(**regularizer):
    """The paper's MNIST maxout MLP (`models.mnist_maxout_mlp`)."""
    import keras_gradreg as kg

    return kg.models.mnist_maxout_mlp(**regularizer)


def small_cnn(**regularizer):
    """conv32 (3x3) -> conv64 (3x3, stride 2) -> conv64 (3x3, stride 2) ->
    dense128 -> softmax(10), ReLU, on (28, 28) images: the network where
    convolutions, not per-step overhead, set the attacks' pace."""
    import keras

    import keras_gradreg as kg

    inputs = keras.Input((28, 28))
    h = keras.layers.Reshape((28, 28, 1))(inputs)
    for filters, stride in ((32, 1), (64, 2), (64, 2)):
        h = keras.layers.Conv2D(
            filters, 3, strides=stride, activation="relu", data_format="channels_last"
        )(h)
    h = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(h))
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return kg.GradRegModel(inputs, outputs, **regularizer)


#: The networks attacked, one epoch each: the paper's maxout MLP trained
#: plainly, and a small CNN trained with FGSM at linf 0.1.
NETWORKS = {
    "maxout_mlp": lambda: maxout_mlp(sigma=0.0),
    "small_cnn": lambda: small_cnn(norm="linf", sigma=0.1, form="perturb"),
}


def train_logits_model(path, network="maxout_mlp", limit=None):
    """One epoch of `NETWORKS[network]` on the first `limit` training images
    (all by default); saves its logits on (1, 28, 28) inputs."""
    import keras

    import keras_gradreg as kg

    (x_train, y_train), _ = kg.datasets.load_mnist()
    x_train, y_train = x_train[:limit], y_train[:limit]
    keras.utils.set_random_seed(0)
    net = NETWORKS[network]()
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    net.fit(x_train, y_train, epochs=1, batch_size=128, verbose=0)
    inputs = keras.Input((1, 28, 28))
    h = keras.layers.Reshape((28, 28))(inputs)
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


def measure(path, suites, norms, points, steps, eps=None):
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
            "eps": eps or EPS[norm],
            "points": len(x),
            **_measure_one(model, x, y, suite, norm, eps or EPS[norm], steps),
        }  # fmt: skip
        for norm in norms
        for suite in suites
    ]


def _measure_one(model, x, y, suite, norm, eps, steps):
    """Seconds and robust accuracy of one suite at one norm."""
    import numpy as np

    import keras_gradreg as kg

    clean = kg.attacks.correct_predictions(model, x, y)
    if suite.startswith("standard"):

        def run(n):
            return kg.evaluate_robustness(
                model, x[:n], y[:n], [norm], [eps], attacks=suite,
                checks=False, verbose=0,
            )  # fmt: skip

        _, cold = _timed(run, len(x))  # compiles: a fresh process's first call
        report, seconds = _timed(run, len(x))
        costs = _pass_costs(model, x, y, norm, eps)
        per_attack = {
            r["attack"]: {
                "accuracy": r["accuracy"],
                "attacked": r["attacked"],
                "seconds": r["seconds"],
                "floor_seconds": _floor(r, costs),
            }  # fmt: skip
            for r in report.rows
            if "attacked" in r
        }
        return {
            "seconds": seconds,
            "first_call_seconds": cold,
            "robust_accuracy": report.accuracy(norm, eps),
            "seconds_per_point_pass": costs,
            "floor_seconds": sum(a["floor_seconds"] for a in per_attack.values()),
            "per_attack": per_attack,
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


#: Passes per attacked point of AutoAttack's standard version, as
#: (forward-and-backward, forward-only): APGD-CE's 100 steps; APGD-T's 9
#: targets x 100 steps; FAB-T's 9 x 100 steps, each the target's logit gap
#: with its gradient and a forward pass at the moved point; Square's 5,000
#: queries. An upper count where a cascade inside an attack (APGD-T's and
#: FAB-T's targets, Square's queries) drops the points it breaks.
PASSES = {
    "APGD-CE": (100, 0), "APGD-T": (900, 0), "FAB-T": (900, 900), "Square": (0, 5000),
}  # fmt: skip


def _pass_costs(model, x, y, norm, eps):
    """Seconds per point of one forward-and-backward pass (a PGD step, from
    PGD-50 less PGD-10 in the library's compiled loop) and of one forward
    pass (the compiled program Square's queries run, 20 calls), both in
    full batches of 500: the arithmetic the suite cannot go below on this
    machine."""
    from keras import ops

    import keras_gradreg as kg
    from keras_gradreg.src.evaluation.attacks._runner import _compiled, _setup

    times = {}
    for steps in (10, 50):
        attack = kg.attacks.PGD(steps=steps)
        attack(model, x, y, norm, eps, seed=0)  # compile
        times[steps] = _timed(attack, model, x, y, norm, eps)[1]
    batch, _, _, scoring, _ = _setup(model, x[:500], y[:500], None, "margin", None, 500)
    key = ("scores", scoring.key, batch.shape[1:])
    scores = _compiled(model, key, lambda: scoring.scores)
    ops.convert_to_numpy(scores(batch))  # compile

    def forward(calls):
        for _ in range(calls):
            ops.convert_to_numpy(scores(batch))

    return {
        "forward_backward": (times[50] - times[10]) / 40 / len(x),
        "forward": _timed(forward, 20)[1] / 20 / len(batch),
    }


def _floor(row, costs):
    """The seconds an attack's passes take at the full-batch cost per point."""
    both, forward = PASSES.get(row["attack"].split("-EOT")[0], (0, 0))
    per_point = both * costs["forward_backward"] + forward * costs["forward"]
    return row["attacked"] * per_point


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
    parser.add_argument(
        "--network", choices=list(NETWORKS), default="maxout_mlp",
        help="the network attacked (default: the paper's maxout MLP)",
    )  # fmt: skip
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument(
        "--train-limit", type=int, default=None,
        help="train on the first N training images (default: all 60,000)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument(
        "--eps", type=float, default=None,
        help=f"one radius for every norm (default: {EPS})",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rows = measure(
            args.worker, args.suites, args.norms, args.points, args.steps, args.eps
        )
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
        path = os.path.join(folder, f"{args.network}_logits.keras")
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
        code = (
            "import attack_cost; "
            f"attack_cost.train_logits_model({path!r}, {args.network!r}, "
            f"{args.train_limit!r})"
        )
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )  # fmt: skip
        for backend in args.backends:
            rows = run_worker(
                __file__,
                [path, "--steps", args.steps, "--points", args.points,
                 *(["--eps", args.eps] if args.eps else []),
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
    _print_profile(results)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


def _print_profile(results):
    """Where a standard suite's time goes: each attack's points, seconds and
    the floor its passes set."""
    suites = [r for r in results if "per_attack" in r]
    if not suites:
        return
    print("\n| backend | norm | attack | points attacked | seconds | floor | × floor |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in suites:
        rows = list(r["per_attack"].items()) + [
            ("whole suite (first call)", {"attacked": r["points"],
             "seconds": r["first_call_seconds"], "floor_seconds": r["floor_seconds"]}),
            ("whole suite (compiled)", {"attacked": r["points"],
             "seconds": r["seconds"], "floor_seconds": r["floor_seconds"]}),
        ]  # fmt: skip
        for name, a in rows:
            ratio = (
                a["seconds"] / a["floor_seconds"]
                if a["floor_seconds"]
                else float("nan")
            )
            print(
                f"| {r['backend']} | {r['norm']} | {name} | {a['attacked']} | "
                f"{a['seconds']:.1f} | {a['floor_seconds']:.1f} | {ratio:.2f} |"
            )


if __name__ == "__main__":
    main()
