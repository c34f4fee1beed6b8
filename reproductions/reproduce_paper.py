"""Reproduce the paper's Tables I, II and IV with the maxout papers' protocol.

`--table 1` (the default): permutation-invariant MNIST, the maxout MLP
exactly as pylearn2's `mnist_pi.yaml` builds and trains it (uniform init +-0.005, input dropout
0.2 with unscaled kept pixels, hidden dropout 0.5, max column norm 1.9365
on every layer, batch 100, SGD lr 0.1 divided by 1.000004 per update,
momentum 0.5 -> 0.7 by epoch 250, early stopping on validation error with
patience 100, then training on all 60,000 images until the loss on the
former validation images falls to the training loss at the best epoch):
`keras_gradreg.protocol.train_then_continue`.
`--table 2`: MNIST with the convolutional maxout network and protocol of
`mnist.yaml` (batch 128, lr 0.05 divided by 1.00004 per update, input
dropout 0.2 unscaled, kernel max-norm 0.9 on the first layer and 1.9365
elsewhere, zero padding 0/3/3; `mnist_conv_maxout(paddings=(0, 3, 3), ...)`).
Table IV's rows come from the same models.

Models: plain maxout + dropout and the l2 penalty member (several seeds),
FGSM adversarial training (linf perturb, alpha 0.5), the linf penalty and
our l1 member. Sigma is chosen on the validation split (last 10,000
training images) by stage 1 of the protocol capped at `--select-epochs`,
or fixed with `--sigma`.
Every final model is tested clean, under Gaussian noise (Table IV; std
0.1 and 0.3, clipped to [0, 1] and not, several draws), under FGM and
PGD-20, and under the standard suite (AutoAttack's APGD-CE, APGD-T and
Square, cached apart in `results/<run>-standard.json`, so a finished run
can be re-evaluated without retraining).

Every run is checkpointed every epoch under `<output>/`; the same command
resumes, and `<output>/settings.json` refuses a resume with other
settings. What a finished run leaves that is worth keeping (the sigma
selection, each run's results, its per-epoch history, the tables) goes to
`--record` (default: `<output>`), a folder small enough to commit: the
repository keeps it in `docs/data/paper-table<N>/`, so a run finished on
one machine is never repeated on the next, which has no `runs/`. Runs go
in the order that answers the paper's main claim first (l2 and plain,
seed 0, then the other seeds, then the other members).

Usage:
    KERAS_BACKEND=jax python -m reproductions.reproduce_paper \
        --record docs/data/paper-table1
    KERAS_BACKEND=jax python -m reproductions.reproduce_paper --table 2 \
        --record docs/data/paper-table2                      # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import keras
import numpy as np

import keras_gradreg as kg
from keras_gradreg.callbacks import EpochTimer
from keras_gradreg.protocol import MAXOUT_PROTOCOLS, train_then_continue

from .paper_study import (
    NOISE_STDS,
    PAPER_STUDY,
    keep_histories,
    recorded,
    write_tables,
)
from .run_records import cached, refuse_mismatched_resume
from .standard_suite import add_standard_suite_arguments, cached_standard

PROTOCOLS = {1: "mnist_pi", 2: "mnist_conv"}


def build(regularizer, protocol, table=1, network=None, clip=True, builder=None):
    """Table 1's maxout MLP or Table 2's convolutional maxout network, as
    pylearn2 builds them (`network` replaces some of their arguments), or
    the network `builder` makes, compiled with the protocol's optimizer.
    `clip` keeps the perturbed images in [0, 1]; Goodfellow et al.'s code
    does not clip them."""
    input_range = (0.0, 1.0) if clip else None
    if builder is None:
        builder = functools.partial(kg.models.paper_network, PROTOCOLS[table])
    model = builder(input_range=input_range, **(network or {}), **regularizer)
    model.compile(
        protocol.optimizer(), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def plan(seeds, members, study=PAPER_STUDY):
    """(member, seed) in the order the runs go: the main claim first."""
    order = [(m, s) for s in seeds for m in study.every_seed if m in members]
    order += [
        (m, seeds[0])
        for m in study.members
        if m in members and m not in study.every_seed
    ]
    return order


def evaluate(model_path, x_test, y_test, seed, noise_draws):
    model = keras.saving.load_model(model_path)
    report = kg.evaluate_robustness(
        model, x_test, y_test, ["linf", "l2"], {"linf": (0.1,), "l2": (1.0,)},
        ["fgm", kg.attacks.PGD(steps=20)], seed=seed, verbose=0,
        noise_stds=NOISE_STDS, noise_draws=noise_draws,
    )  # fmt: skip
    row = {"test_error": 1.0 - report.clean_accuracy}
    # The records' keys, e.g. "noise 0.1 clipped" (to [0, 1]) and "noise 0.1".
    for noisy in report.noise:
        key = f"noise {noisy['std']:g}" + (" clipped" if noisy["clip"] else "")
        row[key] = {"error": 1.0 - noisy["accuracy"], "spread": noisy["spread"]}
    row["robust"] = {
        "linf 0.1": report.accuracy("linf", 0.1),
        "l2 1": report.accuracy("l2", 1.0),
    }
    row["fgsm_accuracy"] = report.accuracy("linf", 0.1, "FGM")
    return row


def main(argv=None, study=PAPER_STUDY, description=None, default_output=None):
    """Runs `study` (Table I or II: `PAPER_STUDY`) as `argv` says; returns
    the rows of the runs it asked for."""
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
    parser.add_argument("--table", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--output", default=default_output, help="default runs/paper-table<N>"
    )
    parser.add_argument(
        "--record", default=None,
        help="folder for the finished runs' records (default: --output)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--members", nargs="+", default=list(study.members))
    parser.add_argument("--select-epochs", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--continue-max-epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--noise-draws", type=int, default=5)
    parser.add_argument(
        "--no-clip", action="store_true",
        help="train on perturbed images left unclipped, as Goodfellow et al.'s "
        "code does (default: clipped to [0, 1])",
    )  # fmt: skip
    parser.add_argument(
        "--stage2-optimizer", choices=("fresh",), default=None,
        help="'fresh': stage 2 starts from zero velocity, as pylearn2's "
        "mnist_pi_continued.yaml (default: stage 1's best state goes on)",
    )  # fmt: skip
    parser.add_argument(
        "--sigma", type=float, default=None,
        help="train the members whose sigma the study chooses on the validation "
        "split with this sigma instead, skipping the selection",
    )  # fmt: skip
    add_standard_suite_arguments(parser)
    parser.add_argument("--limit", type=int, default=None, help="smoke runs")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.members) - set(study.members))
    if unknown:
        parser.error(
            f"--members must be among {list(study.members)}. Received: {unknown}"
        )
    if args.sigma is not None and not args.sigma > 0:
        parser.error(f"--sigma must be > 0. Received: {args.sigma}")
    protocol = MAXOUT_PROTOCOLS[PROTOCOLS[args.table]].replace(**study.protocol)
    for name in ("max_epochs", "continue_max_epochs", "patience", "stage2_optimizer"):
        if getattr(args, name) is not None:
            protocol = protocol.replace(**{name: getattr(args, name)})
    out = Path(args.output or f"runs/paper-table{args.table}")
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        # Fields left at None or () are dropped: folders made before
        # `MaxoutProtocol` had them resume.
        "protocol": {
            k: v for k, v in dataclasses.asdict(protocol).items() if v not in (None, ())
        },
        "select_epochs": args.select_epochs,
        **study.settings(),
        "noise_draws": args.noise_draws,
        # Left out when clipped: folders made before `--no-clip` resume.
        **({"clip": False} if args.no_clip else {}),
        **({"sigma": args.sigma} if args.sigma is not None else {}),
        "limit": args.limit,
        "backend": keras.backend.backend(),
    }
    record = Path(args.record) if args.record else out
    for folder in {out, record}:
        folder.mkdir(parents=True, exist_ok=True)
        refuse_mismatched_resume(parser, folder, settings)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = kg.datasets.load_mnist(
        validation_size=10000
    )
    if args.limit:
        n = args.limit
        x_train, y_train, x_val, y_val = x_train[:n], y_train[:n], x_val[:n], y_val[:n]
        x_test, y_test = x_test[:n], y_test[:n]

    def select(member):
        """Sigma with the best validation accuracy after stage 1 (capped)."""
        scores = []
        for sigma in study.grids[member]:
            regularizer = {**study.members[member], "sigma": sigma}

            def run(sigma=sigma, regularizer=regularizer):
                print(f"\n== select {member} sigma={sigma}", flush=True)
                keras.utils.set_random_seed(0)
                short = protocol.replace(max_epochs=args.select_epochs)
                folder = out / "select" / f"{member}-{sigma:g}"
                stop = kg.protocol.ResumableEarlyStopping(
                    folder, patience=short.patience
                )
                model = build(
                    regularizer, short, args.table, study.networks.get(member),
                    clip=not args.no_clip, builder=study.builder,
                )  # fmt: skip
                model.fit(
                    x_train, y_train, batch_size=short.batch_size,
                    epochs=short.max_epochs, validation_data=(x_val, y_val),
                    verbose=args.verbose,
                    callbacks=[
                        kg.callbacks.BackupAndRestore(str(folder / "backup")),
                        short.momentum_schedule(), stop,
                    ],
                )  # fmt: skip
                return {"val_accuracy": stop.best, "best_epoch": stop.best_epoch + 1}

            result = cached(record / "select" / f"{member}-{sigma:g}.json", run)
            scores.append(result["val_accuracy"])
        sigmas = list(study.grids[member])
        chosen = sigmas[int(np.argmax(scores))]
        return {"sigmas": sigmas, "val_accuracy": scores, "chosen": chosen}

    def final(member, seed, regularizer):
        print(f"\n== final {member} seed={seed} {regularizer}", flush=True)
        keras.utils.set_random_seed(seed)
        timer = EpochTimer()
        directory = out / "runs" / f"{member}-seed{seed}"
        summary = train_then_continue(
            build(
                regularizer, protocol, args.table, study.networks.get(member),
                clip=not args.no_clip, builder=study.builder,
            ),
            (x_train, y_train), (x_val, y_val),
            directory, protocol, callbacks=[timer], verbose=args.verbose,
        )  # fmt: skip
        keep_histories(directory, record / "histories", f"{member}-seed{seed}")
        row = evaluate(summary["model_path"], x_test, y_test, seed, args.noise_draws)
        return {
            "member": member, "seed": seed, "regularizer": regularizer,
            **summary, **row, "seconds_per_epoch": timer.median,
        }  # fmt: skip

    selection = {}
    rows = []
    for member, seed in plan(args.seeds, args.members, study):
        regularizer = dict(study.members[member])
        source = study.sigma_source(member)
        if source is not None and args.sigma is not None:
            regularizer["sigma"] = args.sigma
        elif source is not None:
            selection[source] = cached(
                record / "select" / f"{source}.json", lambda m=source: select(m)
            )
            regularizer["sigma"] = selection[source]["chosen"]
        row = cached(
            record / "results" / f"{member}-seed{seed}.json",
            lambda m=member, s=seed, r=regularizer: final(m, s, r),
        )
        row["standard"] = cached_standard(
            record / "results" / f"{member}-seed{seed}-standard.json",
            row["model_path"], x_test, y_test, seed, args,
        )  # fmt: skip
        rows.append(row)
        # Every run recorded so far, whichever process finished it: runs of
        # other members can go on side by side in other processes.
        write_tables(record, *recorded(record, study), args.table, study)
    return rows


if __name__ == "__main__":
    main()
