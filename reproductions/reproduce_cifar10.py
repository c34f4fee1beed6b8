"""Reproduce the paper's Table III: CIFAR-10 without augmentation.

The convolutional maxout network and training of pylearn2's
`cifar10_no_aug_valid.yaml` (the 40K column) and `cifar10_no_aug.yaml` (the
50K column): images globally contrast-normalized (each image centered, its
norm 55) and ZCA-whitened with a filter bias of 0.1 (fitted on the 50,000
training images), as pylearn2's `make_cifar10_gcn_whitened.py` made them;
three convolutional maxout layers (96, 192, 192 filters x 2 pieces, zero
padding 4/3/3), a 500 x 5 maxout layer, softmax;
input dropout 0.2 unscaled and 0.5 on every hidden layer; max-norms 0.9,
1.9365, 1.9365, 1.9, 1.9365; uniform init +-0.005; batch 128, SGD with
momentum 0.5 -> 0.6 by epoch 250, learning rate 0.17 decayed linearly to
1% over 500 epochs, 0.05 of it on the convolutions
(`MAXOUT_PROTOCOLS["cifar10"]`).

- 40K: trained on the first 40,000 training images with early stopping on
  the validation error of the last 10,000 (patience 100), the best model
  tested. Each sigma of the l2 member's grid is one such run, and the one
  with the best validation accuracy is the member's row (sigma is never
  chosen on the test set).
  `--only-40k` stops there, so the grid can be split over processes
  (`--sigmas 0.3` in one, `--sigmas 1` in another); every finished run is
  kept under `--record` by its sigma and read back by later calls.
- 50K: a fresh model with the chosen sigma trained on all 50,000 images
  for a fixed 785 epochs, tested. `--retrain-sigma S` trains it for sigma
  S alone, ahead of the grid (the leader, while another sigma's 40K run
  finishes); the table call reads it back if the 40K runs choose S, and
  retrains the chosen sigma otherwise.

Results are labelled "CIFAR-10 (JPEG copy)" when read from the JPEG folder.
`--width` scales every layer for CPU budgets. With the paper's init range
(0.005) a narrow network's signal shrinks layer by layer: at width 0.125
its initial outputs are 45 times smaller than at width 1. `--init
paper-width` divides the range by sqrt(width) on every layer but the
first, which gives each layer the full network's scale at init (measured
at width 0.125, it still sat at chance for three epochs, as without it).
`--init glorot` (Keras's default) with `--conv-lr-scale 0.3` (the paper's
is 0.05) leaves chance in the first epoch: the CPU budget's recipe.
`--max-epochs`, `--patience` and `--retrain-epochs` shorten the schedule;
the table states what ran.
Runs are checkpointed every epoch and resume; finished runs' records go to
`--record` (see `reproduce_paper.py`).

Usage:
    KERAS_BACKEND=jax python -m reproductions.reproduce_cifar10 \\
        --record docs/data/paper-table3                          # on a GPU
    KERAS_BACKEND=jax python -m reproductions.reproduce_cifar10 --width 0.125 \\
        --init glorot --conv-lr-scale 0.3 --max-epochs 10 --patience 5 \\
        --retrain-epochs 10 --output runs/paper-table3-cpu \\
        --record docs/data/paper-table3-cpu                      # 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import keras

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer
from keras_gradreg.protocol import MAXOUT_PROTOCOLS, train_then_continue

from .paper_study import draw_runs, keep_histories
from .run_records import cached, refuse_mismatched_resume, refuse_non_positive

#: The paper's Table III test errors (%): (40K, 50K).
PAPER = {"plain": (14.05, 12.93), "l2": (13.26, 12.28)}
MEMBERS = {"plain": {"sigma": 0.0}, "l2": {"norm": "l2", "form": "penalty"}}
LABELS = {"plain": "conv maxout + dropout", "l2": "+ gradient p = 2 (l2 penalty)"}


#: The layers whose fan-in `--width` shrinks (every one but the first).
WIDER_FAN_IN = ("conv_maxout_2", "conv_maxout_3", "maxout", "softmax")
#: `--init`: the paper's uniform +-0.005; the same divided by sqrt(width)
#: on the layers in `WIDER_FAN_IN`; Keras's Glorot uniform.
INITS = ("paper", "paper-width", "glorot")
INIT_LABELS = {
    "paper": "init +-0.005",
    "paper-width": "init +-0.005 / sqrt(width) past the first layer",
    "glorot": "Glorot uniform init",
}


def build(regularizer, protocol, width, steps_per_epoch, init="paper"):
    """The paper's network at `width`, compiled with `protocol`'s optimizer.
    `init` is one of `INITS`. With "paper-width" the init range of the
    layers in `WIDER_FAN_IN` is divided by sqrt(width): each layer's output
    at init then has the full network's scale, which the paper's range
    alone loses layer by layer."""
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}. Received: init={init!r}")
    glorot = {"kernel_initializer": "glorot_uniform"} if init == "glorot" else {}
    model = kg.models.paper_network("cifar10", width=width, **glorot, **regularizer)
    if init == "paper-width":
        for name in WIDER_FAN_IN:
            kernel = model.get_layer(name).kernel
            kernel.assign(kernel / math.sqrt(width))
    model.compile(
        protocol.optimizer(steps_per_epoch), "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )  # fmt: skip
    return model


def whitened_cifar10(limit=None):
    """GCN + ZCA (fitted on all training images) CIFAR-10: the 40K/10K split,
    all 50K, the test set, and the data's label."""
    (x, y), (x_test, y_test), source = kg.datasets.load_cifar10(return_source=True)
    if limit:
        x, y, x_test, y_test = (
            x[: 2 * limit],
            y[: 2 * limit],
            x_test[:limit],
            y_test[:limit],
        )
    # pylearn2's make_cifar10_gcn_whitened.py: CIFAR10(gcn=55.), then ZCA()
    # with its filter bias of 0.1.
    x, x_test = (
        kg.datasets.global_contrast_normalize(a, scale=55.0) for a in (x, x_test)
    )
    zca = kg.datasets.ZCAWhitening(epsilon=0.1).fit(x)
    x, x_test = zca.transform(x), zca.transform(x_test)
    split = len(x) * 4 // 5
    return (
        (x[:split], y[:split]),
        (x[split:], y[split:]),
        (x, y),
        (x_test, y_test),
        source,
    )


def test_error(model_path, x_test, y_test):
    model = keras.saving.load_model(model_path)
    return 1.0 - kg.classification_accuracy(model, x_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/paper-table3")
    parser.add_argument("--record", default=None, help="default: --output")
    parser.add_argument(
        "--members", nargs="+", choices=list(MEMBERS), default=list(MEMBERS)
    )
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument(
        "--init", choices=INITS, default="paper",
        help="paper: uniform +-0.005; paper-width: that range divided by "
        "sqrt(width) on every layer but the first, so a narrow network starts "
        "at the full one's signal scale; glorot: Keras's default",
    )  # fmt: skip
    parser.add_argument(
        "--conv-lr-scale",
        type=float,
        default=None,
        help="the convolutions' learning-rate factor (the paper's: 0.05)",
    )
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--retrain-epochs", type=int, default=None)
    parser.add_argument(
        "--only-40k",
        action="store_true",
        help="train the 40K runs only (e.g. one sigma per process); a later call "
        "without it reads them back and retrains the chosen sigma on 50K",
    )
    parser.add_argument(
        "--retrain-sigma",
        type=float,
        default=None,
        help="retrain the l2 member at this sigma on 50K now, in a process of "
        "its own while the 40K grid finishes (the leader, say); the call that "
        "writes the table reads it back if the 40K runs choose this sigma",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="smoke runs")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    refuse_non_positive(
        parser, args, "width", "max_epochs", "patience", "retrain_epochs", "limit",
        "sigmas", "retrain_sigma",
    )  # fmt: skip
    if args.retrain_sigma is not None and (args.only_40k or "l2" not in args.members):
        parser.error(
            "--retrain-sigma retrains the l2 member on 50K: it needs l2 among "
            "--members and no --only-40k. Received: --members "
            f"{' '.join(args.members)}{' --only-40k' if args.only_40k else ''}"
        )
    protocol = MAXOUT_PROTOCOLS["cifar10"]
    for name in ("max_epochs", "patience", "retrain_epochs"):
        if getattr(args, name) is not None:
            protocol = protocol.replace(**{name: getattr(args, name)})
    if args.conv_lr_scale is not None:
        protocol = protocol.replace(
            learning_rate_scales=tuple(
                (name, args.conv_lr_scale) for name, _ in protocol.learning_rate_scales
            )
        )
    # Table III's 40K column is the early-stopped model itself: no stage 2.
    protocol = protocol.replace(continue_max_epochs=0)
    out = Path(args.output)
    record = Path(args.record) if args.record else out
    settings = {
        "protocol": dataclasses.asdict(protocol), "width": args.width,
        "init": args.init,
        "seed": args.seed, "limit": args.limit,
        "backend": keras.backend.backend(),
    }  # fmt: skip
    for folder in {out, record}:
        folder.mkdir(parents=True, exist_ok=True)
        refuse_mismatched_resume(parser, folder, settings)
    train40, val, train50, (x_test, y_test), source = whitened_cifar10(args.limit)
    steps40 = math.ceil(len(train40[0]) / protocol.batch_size)
    steps50 = math.ceil(len(train50[0]) / protocol.batch_size)

    def run_40k(member, sigma):
        name = f"{member}-{sigma:g}-40k"
        print(f"\n== 40K {member} sigma={sigma:g}", flush=True)
        keras.utils.set_random_seed(args.seed)
        regularizer = {**MEMBERS[member], "sigma": sigma}
        summary = train_then_continue(
            build(regularizer, protocol, args.width, steps40, args.init),
            train40, val,
            out / name, protocol, callbacks=[EpochTimer()], verbose=args.verbose,
        )  # fmt: skip
        keep_histories(out / name, record / "histories", name)
        error = test_error(summary["model_path"], x_test, y_test)
        return {"member": member, "seed": args.seed, "sigma": sigma, **summary,
                "test_error": error}  # fmt: skip

    def run_50k(member, sigma):
        print(f"\n== 50K {member} sigma={sigma:g}", flush=True)
        keras.utils.set_random_seed(args.seed)
        folder = out / f"{member}-{sigma:g}-50k"
        folder.mkdir(parents=True, exist_ok=True)
        model = build(
            {**MEMBERS[member], "sigma": sigma}, protocol, args.width, steps50,
            args.init,
        )  # fmt: skip
        timer = EpochTimer()
        model.fit(
            *train50, batch_size=protocol.batch_size, epochs=protocol.retrain_epochs,
            verbose=args.verbose,
            callbacks=[
                kg.callbacks.BackupAndRestore(str(folder / "backup")),
                protocol.momentum_schedule(), timer,
                keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
            ],
        )  # fmt: skip
        model.save(folder / "final.keras")
        histories = record / "histories"
        histories.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "history.csv", histories / f"{folder.name}.csv")
        return {"test_error": test_error(folder / "final.keras", x_test, y_test),
                "epochs": protocol.retrain_epochs, "seconds_per_epoch": timer.median}  # fmt: skip

    if args.retrain_sigma is not None:
        sigma = args.retrain_sigma
        retrained = cached(
            record / "results" / f"l2-{sigma:g}-50k.json", lambda: run_50k("l2", sigma)
        )
        print(f"50K l2 sigma={sigma:g}: test error {retrained['test_error']:.2%}")
        return {"l2": retrained}
    rows = {}
    for member in args.members:
        grid = [0.0] if member == "plain" else args.sigmas
        runs = [
            cached(record / "results" / f"{member}-{s:g}-40k.json",
                   lambda m=member, s=s: run_40k(m, s))
            for s in grid
        ]  # fmt: skip
        retrain = None if args.only_40k else (lambda s, m=member: run_50k(m, s))
        rows[member] = member_row(record, member, runs, retrain)
    # The table holds every recorded run, whichever call trained it: a call
    # for one sigma (the grid split over processes) must not make that sigma
    # its member's row.
    write_table(record, recorded_rows(record), args, protocol, source)
    return rows


def member_row(record, member, runs, retrain=None):
    """A member's row: the 40K run with the best validation accuracy among
    `runs` and the 50K retraining with its sigma, recorded or (when
    `retrain(sigma)` is given) run now; None if neither."""
    chosen = max(runs, key=lambda r: r["best"])
    path = record / "results" / f"{member}-{chosen['sigma']:g}-50k.json"
    if retrain is not None:
        retrained = cached(path, lambda: retrain(chosen["sigma"]))
    else:
        retrained = json.loads(path.read_text()) if path.exists() else None
    return {"40k": chosen, "50k": retrained, "candidates": runs}


def recorded_rows(record):
    """The rows of the members that have finished 40K runs under `record`,
    every recorded sigma a candidate."""
    rows = {}
    for member in MEMBERS:
        paths = (record / "results").glob(f"{member}-*-40k.json")
        runs = sorted((json.loads(p.read_text()) for p in paths),
                      key=lambda r: r["sigma"])  # fmt: skip
        if runs:
            rows[member] = member_row(record, member, runs)
    return rows


def write_table(out, rows, args, protocol, source):
    """`results.md` and `results.json`; `protocol` is the one that ran (with
    the command line's shorter schedule, if any)."""
    lines = [
        f"Table III: {source}, convolutional maxout at width {args.width:g}, "
        f"{INIT_LABELS[args.init]}, the convolutions' learning rate "
        f"x{dict(protocol.learning_rate_scales)['conv_maxout_1']:g} "
        f"(test error, seed {args.seed}; 40K: early stopping, at most "
        f"{protocol.max_epochs} epochs, patience {protocol.patience}; 50K: "
        f"{protocol.retrain_epochs} epochs).",
        "",
        "| model | sigma | paper 40K | ours 40K | best epoch | paper 50K | ours 50K |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for member, row in rows.items():
        paper40, paper50 = PAPER[member]
        ours50 = f"{row['50k']['test_error']:.2%}" if row["50k"] else "—"
        lines.append(
            f"| {LABELS[member]} | {row['40k']['sigma']:g} | {paper40:.2f}% | "
            f"{row['40k']['test_error']:.2%} | {row['40k']['best_epoch']} | "
            f"{paper50:.2f}% | {ours50} |"
        )
    for member, row in rows.items():
        if len(row["candidates"]) > 1:
            pairs = ", ".join(
                f"{r['sigma']:g}: {r['best']:.2%}" for r in row["candidates"]
            )
            lines += [
                "",
                f"Validation accuracy of the {member} 40K runs by sigma: {pairs}.",
            ]
    runs = [r for row in rows.values() for r in row["candidates"]]
    if draw_runs(
        out, runs, name=lambda r: f"{r['member']}-{r['sigma']:g}-40k",
        label=lambda r: f"{LABELS[r['member']]}, sigma {r['sigma']:g}",
    ):  # fmt: skip
        lines += ["", "![Early stopping of every 40K run](curves.png)"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
