"""The family's members side by side on a small CNN.

Trains each member on MNIST at linf 0.3 and Fashion-MNIST at linf 0.1, and
once more on MNIST at a radius where FGSM training overfits
catastrophically, and reports clean test accuracy, robust accuracy under
APGD-CE, APGD-T and Square as a cascade (the standard suite without FAB-T,
`attacks="standard-no-fab"`) on the first `--standard-points` test images,
and the step time relative to plain Keras (read from the record of
`benchmarks/step_cost.py --network small_cnn`, `--step-cost`). Each epoch
also logs PGD-10 accuracy on 500 held-out test images (`RobustAccuracy`),
the learning curves in which a collapse shows.

Network and training (every setting): the MNIST CNN of Wong, Rice &
Kolter (2020), conv 16 4x4 stride 2 ReLU, conv 32 4x4 stride 2 ReLU, dense
100 ReLU, dense 10 (logits), trained as their MNIST script trains it: 10
epochs, batch 100, Adam with their cyclic learning rate (0 -> 5e-3 at 2/5
of the run -> 0, `kg.optimizers.CyclicLearningRate(peak=0.4)`), inputs in
[0, 1]. The sigma of every member with sigma > 0 ramps up linearly over
the first 3 epochs (`--warmup-epochs`, `SigmaSchedule.linear`), as MNIST
recipes at linf 0.3 do.

Members, at the setting's linf radius sigma: plain; FGSM training (the
perturb form, alpha 0); FGSM-RS; N-FGSM; GradAlign (lambda `--gradalign`);
PGD-k training (the multistep form, alpha 0, `--pgd-steps` steps, random
start); TRADES (beta 6, `--pgd-steps` steps); and the paper's linf (sigma)
and l2 (`l2_sigma`) penalty members. The collapse setting trains the
single-step members against PGD-k.

Every run is cached under `--output` (its results JSON, per-epoch history
and model), an interrupted one resumes from its last finished epoch, and
`settings.json` refuses a resume with other settings.

Usage:
    KERAS_BACKEND=jax python -m reproductions.compare_members \
        --output runs/members --record docs/data/members
    # a reduced budget, stated in the records:
    KERAS_BACKEND=jax python -m reproductions.compare_members --epochs 3 \
        --train-limit 10000 --seeds 0 --output runs/members-reduced
    # the table and curves of the runs finished so far, training nothing:
    python -m reproductions.compare_members --finished-only --record docs/data/members
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer

from .run_records import (
    cached,
    refuse_mismatched_resume,
    refuse_non_positive,
    train_once,
)
from .standard_suite import add_standard_suite_arguments

#: Setting -> (dataset, linf radius, l2 radius of the l2 member, members).
SETTINGS = {
    "mnist": ("mnist", 0.3, 2.0, None),
    "fashion": ("fashion_mnist", 0.1, 1.0, None),
    "mnist-collapse": ("mnist", 0.4, None, ("plain", "fgsm", "fgsm_rs", "n_fgsm",
                                            "gradalign", "pgd")),
}  # fmt: skip
LABELS = {
    "plain": "plain",
    "fgsm": "FGSM training",
    "fgsm_rs": "FGSM-RS",
    "n_fgsm": "N-FGSM",
    "gradalign": "GradAlign",
    "pgd": "PGD-k training",
    "trades": "TRADES",
    "linf": "linf penalty",
    "l2": "l2 penalty",
}


#: Member -> its configuration in `benchmarks/step_cost.py` (k: --pgd-steps).
STEP_COST_NAMES = {
    "plain": "plain",
    "fgsm": "perturb linf alpha=0",
    "fgsm_rs": "fgsm_rs linf",
    "n_fgsm": "n_fgsm linf",
    "gradalign": "gradalign linf",
    "pgd": "multistep linf k={k}",
    "trades": "trades linf k={k}",
    "linf": "penalty linf",
    "l2": "penalty l2",
}


def members(sigma, l2_sigma, steps, gradalign):
    """Member name -> `GradRegModel` arguments at linf radius `sigma`."""
    linf = {"norm": "linf", "sigma": sigma, "input_range": (0.0, 1.0)}
    return {
        "plain": {"sigma": 0.0},
        "fgsm": {**linf, "form": "perturb"},
        "fgsm_rs": {**linf, "form": "fgsm_rs"},
        "n_fgsm": {**linf, "form": "n_fgsm"},
        "gradalign": {**linf, "form": kg.forms.GradAlign(weight=gradalign)},
        "pgd": {**linf, "form": kg.forms.Multistep(steps=steps)},
        "trades": {**linf, "form": kg.forms.TRADES(steps=steps)},
        "linf": {**linf, "form": "penalty"},
        "l2": {**linf, "norm": "l2", "sigma": l2_sigma or 0.0, "form": "penalty"},
    }


#: Where the cyclic learning rate peaks, as a fraction of the run.
PEAK = 0.4
#: The network, as `settings.json` names it.
NETWORK = "wong2020-mnist: conv16k4s2-conv32k4s2-dense100"


def small_cnn(regularizer):
    """Wong, Rice & Kolter's MNIST CNN around `regularizer`."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 4, strides=2, activation="relu", padding="same")(inputs)
    h = keras.layers.Conv2D(32, 4, strides=2, activation="relu", padding="same")(h)
    h = keras.layers.Dense(100, activation="relu")(keras.layers.Flatten()(h))
    outputs = keras.layers.Dense(10)(h)
    return kg.GradRegModel(inputs, outputs, **regularizer)


def suite(args):
    """The standard suite, APGD-CE, APGD-T and Square, at the budget asked
    for (AutoAttack's: 100 steps, 5,000 queries)."""
    return [
        kg.attacks.APGD(steps=args.apgd_steps),
        kg.attacks.APGD(steps=args.apgd_steps, targeted=True),
        kg.attacks.Square(queries=args.square_queries),
    ]


def load(dataset, limit):
    loader = (
        kg.datasets.load_mnist if dataset == "mnist" else kg.datasets.load_fashion_mnist
    )
    (x, y), (x_test, y_test) = loader()
    x, x_test = x[..., None], x_test[..., None]
    return (x[:limit], y[:limit]), (x_test, y_test)


def train(regularizer, data, held, args, seed, folder):
    """Trains one member; returns `(model, seconds per epoch, history)`."""
    (x, y), (x_held, y_held, sigma) = data, held
    keras.utils.set_random_seed(seed)
    model = small_cnn(regularizer)
    warmup = []
    if regularizer["sigma"] > 0 and args.warmup_epochs > 0:
        warmup = [
            kg.callbacks.SigmaSchedule.linear(regularizer["sigma"], args.warmup_epochs)
        ]
    steps = args.epochs * -(-len(x) // args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(
            kg.optimizers.CyclicLearningRate(args.learning_rate, steps, peak=PEAK)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def fit(model):
        timer = EpochTimer()
        model.fit(
            x, y, batch_size=args.batch_size, epochs=args.epochs,
            verbose=args.verbose,
            callbacks=[
                kg.callbacks.RobustAccuracy(
                    (x_held, y_held), eps=sigma, subset_size=None, seed=seed,
                    name="held_pgd_accuracy",
                ),
                kg.callbacks.BackupAndRestore(
                    str(folder / "backup"), delete_checkpoint=False
                ),
                keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
                timer,
                *warmup,
            ],
        )  # fmt: skip
        return {"seconds_per_epoch": timer.median}

    # A resumed run's `fit` history starts at the resume: read the log.
    seconds = train_once(model, folder, fit)["seconds_per_epoch"]
    return model, seconds, kg.plots.read_history(folder / "history.csv")


def run_member(run, regularizer, data, test, held, args, folder, record):
    """Trains and evaluates one run, `(setting, member, seed)`; returns its
    results row."""
    setting, member, seed = run
    name, sigma = folder.name, held[2]
    print(f"\n== {name}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    model, seconds, history = train(regularizer, data, held, args, seed, folder)
    points = args.standard_points
    x_test, y_test = test[0][:points], test[1][:points]
    report = kg.evaluate_robustness(
        model, x_test, y_test, ["linf"], {"linf": (sigma,)}, suite(args),
        seed=seed, cascade=True, verbose=min(args.verbose, 1),
    )  # fmt: skip
    (record / "histories").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "history.csv", record / "histories" / f"{name}.csv")
    return {
        "setting": setting, "member": member, "seed": seed, "sigma": sigma,
        "clean_accuracy": report.clean_accuracy,
        "robust_accuracy": report.accuracy("linf", sigma),
        "attacks": {r["attack"]: r["accuracy"] for r in report.rows},
        "seconds_per_epoch": seconds,
        "held_pgd_accuracy": history["held_pgd_accuracy"],
    }  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS)
    )
    parser.add_argument(
        "--members", nargs="+", choices=list(LABELS), default=list(LABELS)
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--learning-rate", type=float, default=5e-3, help="the cyclic schedule's peak"
    )
    parser.add_argument(
        "--train-limit", type=int, default=None, help="first N training images"
    )
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument(
        "--warmup-epochs", type=int, default=3,
        help="epochs over which sigma ramps up linearly (0: full sigma from the start)",
    )  # fmt: skip
    parser.add_argument(
        "--gradalign", type=float, default=0.2, help="GradAlign's lambda"
    )
    add_standard_suite_arguments(parser)
    parser.add_argument("--output", default="runs/members")
    parser.add_argument(
        "--record", default=None, help="records folder (default --output)"
    )
    parser.add_argument(
        "--step-cost", default="docs/data/step_cost_small_cnn.json",
        help="the step-cost record the table's step times come from",
    )  # fmt: skip
    parser.add_argument(
        "--finished-only", action="store_true",
        help="train nothing: tabulate and draw the runs already recorded",
    )  # fmt: skip
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    refuse_non_positive(
        parser, args, "epochs", "batch_size", "train_limit", "pgd_steps",
        "standard_points", "apgd_steps", "square_queries", "learning_rate",
    )  # fmt: skip
    if not (args.warmup_epochs == 0 or 2 <= args.warmup_epochs <= args.epochs):
        parser.error(
            f"--warmup-epochs must be 0 (no ramp) or between 2 and --epochs "
            f"({args.epochs}). Received: {args.warmup_epochs}"
        )
    out = Path(args.output)
    record = Path(args.record or args.output)
    settings = {
        "epochs": args.epochs, "batch_size": args.batch_size,
        "train_limit": args.train_limit, "pgd_steps": args.pgd_steps,
        "warmup_epochs": args.warmup_epochs, "learning_rate": args.learning_rate,
        "learning_rate_peak": PEAK,
        "gradalign": args.gradalign, "standard_points": args.standard_points,
        "apgd_steps": args.apgd_steps, "square_queries": args.square_queries,
        "network": NETWORK, "backend": keras.backend.backend(),
    }  # fmt: skip
    for folder in {out, record}:
        folder.mkdir(parents=True, exist_ok=True)
        refuse_mismatched_resume(parser, folder, settings)

    rows = []
    for setting in args.settings:
        dataset, sigma, l2_sigma, only = SETTINGS[setting]
        if not args.finished_only:
            data, (x_test, y_test) = load(dataset, args.train_limit)
            held = (x_test[-500:], y_test[-500:], sigma)
        chosen = members(sigma, l2_sigma, args.pgd_steps, args.gradalign)
        for seed in args.seeds:
            for member in args.members:
                if only is not None and member not in only:
                    continue
                name = f"{setting}-{member}-seed{seed}"
                if args.finished_only:
                    path = record / "results" / f"{name}.json"
                    if path.exists():
                        rows.append(json.loads(path.read_text()))
                    continue
                run = functools.partial(
                    run_member, (setting, member, seed), chosen[member], data,
                    (x_test, y_test), held, args, out / "runs" / name, record,
                )  # fmt: skip
                row = cached(record / "results" / f"{name}.json", run)
                rows.append(row)
    if not rows:
        parser.error(f"no finished runs in {record / 'results'} to tabulate")
    lines = table(rows, args)
    (record / "results.md").write_text("\n".join(lines) + "\n")
    (record / "results.json").write_text(json.dumps(rows, indent=2))
    curves(rows, record / "curves.png")
    print("\n".join(lines), flush=True)
    return rows


def _cell(values):
    """Fractions as a percentage, or their mean ± sd over seeds."""
    values = np.asarray(values, float)
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{values.mean():.1%} ± {values.std(ddof=1):.1%}"


def table(rows, args):
    lines = [
        f"Wong et al.'s MNIST CNN, {args.epochs} epochs"
        + (
            f" on the first {args.train_limit} training images"
            if args.train_limit
            else ""
        )
        + (
            f"; sigma ramped up over {args.warmup_epochs} epochs"
            if args.warmup_epochs
            else ""
        )
        + f"; the standard suite on the first {args.standard_points} test images "
        "(mean ± sd over seeds). Step time against a plain `keras.Model` from "
        f"`benchmarks/step_cost.py --network small_cnn` ({args.step_cost}): the runs'"
        " own epoch times are not comparable when they share the cores.",
        "",
        "| setting | member | seeds | clean | standard suite | step time x plain |",
        "|---|---|---:|---:|---:|---:|",
    ]
    speeds = {}
    if Path(args.step_cost).exists():
        (run,) = json.loads(Path(args.step_cost).read_text())
        speeds = run["examples_per_s"]
    groups = {}
    for row in rows:
        groups.setdefault((row["setting"], row["member"]), []).append(row)
    for (setting, member), group in groups.items():
        config = STEP_COST_NAMES[member].format(k=args.pgd_steps)
        ratio = speeds["plain"] / speeds[config] if config in speeds else None
        lines.append(
            f"| {setting} (linf {group[0]['sigma']:g}) | {LABELS[member]} | {len(group)} | "
            f"{_cell([r['clean_accuracy'] for r in group])} | "
            f"{_cell([r['robust_accuracy'] for r in group])} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} |"
        )
    return lines


def curves(rows, path):
    """PGD-10 accuracy on the held images per epoch, one panel per setting:
    one colour per member, one line style per seed, and one legend below
    the panels. Returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colours = {member: plt.cm.tab10(i) for i, member in enumerate(LABELS)}
    seeds = sorted({r["seed"] for r in rows})
    styles = {seed: ("-", "--", ":", "-.")[i % 4] for i, seed in enumerate(seeds)}
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(
        1, len(settings), figsize=(5.5 * len(settings), 4.2), squeeze=False
    )
    for ax, setting in zip(axes[0], settings):
        for row in rows:
            if row["setting"] == setting:
                values = row["held_pgd_accuracy"]
                ax.plot(
                    range(1, len(values) + 1), values, marker="o", markersize=2.5,
                    linewidth=1.3, color=colours[row["member"]],
                    linestyle=styles[row["seed"]],
                )  # fmt: skip
        ax.set_title(f"{setting}: PGD-10 accuracy on 500 held-out images")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    members = [m for m in LABELS if any(r["member"] == m for r in rows)]
    member_handles = [
        Line2D([], [], color=colours[m], label=LABELS[m]) for m in members
    ]
    seed_handles = [
        Line2D([], [], color="black", linestyle=styles[seed], label=f"seed {seed}")
        for seed in seeds
    ]
    for y, handles in ((0.06, member_handles), (0.0, seed_handles)):
        fig.legend(
            handles=handles, loc="lower center", bbox_to_anchor=(0.5, y),
            ncol=len(handles), fontsize=8, frameon=False,
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [h.get_label() for h in member_handles + seed_handles]


if __name__ == "__main__":
    main()
