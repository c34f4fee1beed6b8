"""What `reproduce_paper.py` runs and what it keeps: the studies (which
members, how each is built), the paper's numbers, and the tables and
curves made from the finished runs' records.

A record folder (`--record`) holds, per finished run, `results/<run>.json`
(and `-standard.json`, the standard suite's), the per-epoch histories of
both stages in `histories/`, and the sigma selection in `select/`; the
functions here rebuild `results.md`, `results.json` and `curves.png` from
it alone, on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np

import keras_gradreg as kg

from .standard_suite import standard_suite_lines

#: The paper's test errors (%) by table and member (Table II's p = inf row
#: is the linf member; Table I's is Goodfellow et al.'s FGSM training).
PAPER = {
    1: {"plain": 0.94, "fgsm": 0.84, "l2": 0.78},
    2: {"plain": 0.45, "linf": 0.41, "l2": 0.39},
}
#: Table IV: test error (%) under Gaussian noise of std 0, 0.1, 0.3.
PAPER_NOISE = {
    1: {"plain": (0.94, 1.14, 2.42), "l2": (0.78, 0.83, 1.29)},
    2: {"plain": (0.45, 0.76, 20.17), "l2": (0.39, 0.44, 14.36)},
}
NOISE_STDS = (0.1, 0.3)


@dataclasses.dataclass(frozen=True)
class Study:
    """The runs of one study: which members, how each is built, in what order.

    Attributes:
        members: member name -> `GradRegModel` arguments (its regularizer).
        grids: member name -> sigma candidates, for the members whose sigma
            is chosen on the validation split.
        labels: member name -> its row label in the tables.
        networks: member name -> network arguments that replace the
            protocol's (`kernel_initializer`, `input_dropout_scale`, ...).
        every_seed: the members run for every seed, first; the others run
            for the first seed only, in `members`' order.
        shared_sigma: member name -> the member of `grids` whose chosen
            sigma it trains with (an ablation that changes one thing of
            that member, not its sigma).
        builder: a function building the network from keyword arguments
            (`input_range`, the regularizer's, `networks`'), replacing the
            table's paper network; None for the paper network.
        paper: member name -> the paper's test error (%), replacing the
            table's rows of `PAPER`; None for those.
        protocol: the protocol's settings this study changes (for example
            `{"learning_rate": 3.0}`), before the command line's.
    """

    members: dict
    grids: dict
    labels: dict
    networks: dict = dataclasses.field(default_factory=dict)
    every_seed: tuple = ()
    shared_sigma: dict = dataclasses.field(default_factory=dict)
    builder: object = None
    paper: dict | None = None
    protocol: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for member, source in self.shared_sigma.items():
            if member in self.grids or source not in self.grids:
                raise ValueError(
                    "shared_sigma maps a member without a sigma grid to a member "
                    f"with one. Received: {member!r} -> {source!r} with grids for "
                    f"{sorted(self.grids)}"
                )

    def sigma_source(self, member):
        """The member whose sigma selection `member` trains with, or None
        when its sigma is fixed by `members`."""
        source = self.shared_sigma.get(member, member)
        return source if source in self.grids else None

    def settings(self):
        """The part of `settings.json` that this study fixes (keys left
        empty are left out, so that older folders resume)."""
        extra = {
            name: value
            for name, value in (
                ("networks", self.networks),
                ("shared_sigma", self.shared_sigma),
                ("builder", getattr(self.builder, "__name__", None)),
            )
            if value
        }
        return {"grids": self.grids, "members": self.members, **extra}


#: Tables I and II: the paper's rows and our l1 member.
PAPER_STUDY = Study(
    members={
        "plain": {"sigma": 0.0},
        # Fresh dropout masks in the perturbed pass, as Goodfellow et al.'s
        # code drew them (and as this run trained before `share_noise`).
        "fgsm": {
            "norm": "linf",
            "form": "perturb",
            "alpha": 0.5,
            "sigma": 0.25,
            "share_noise": False,
        },
        "l2": {"norm": "l2", "form": "penalty"},
        "linf": {"norm": "linf", "form": "penalty"},
        "l1": {"norm": "l1", "form": "penalty"},
    },
    grids={"l2": (0.1, 0.3, 1.0), "linf": (0.01, 0.03, 0.1), "l1": (0.5, 2.0, 8.0)},
    labels={
        "plain": "maxout + dropout",
        "fgsm": "FGSM adv. training (linf perturb, alpha 0.5, sigma 0.25, fresh masks)",
        "l2": "l2 penalty (p = 2)",
        "linf": "linf penalty (p = inf)",
        "l1": "l1 penalty (ours, no paper row)",
    },
    every_seed=("l2", "plain"),
)


def recorded(record, study=PAPER_STUDY):
    """`(rows, selection)` of every finished run and sigma selection in the
    records folder, in the table's member order, then by seed."""
    rows = []
    for path in sorted((record / "results").glob("*-seed*.json")):
        if path.stem.endswith("-standard"):
            continue
        row = json.loads(path.read_text())
        standard = path.with_name(f"{path.stem}-standard.json")
        if standard.exists():
            row["standard"] = json.loads(standard.read_text())
            rows.append(row)
    rows.sort(key=lambda r: (list(study.members).index(r["member"]), r["seed"]))
    selection = {
        member: json.loads((record / "select" / f"{member}.json").read_text())
        for member in study.grids
        if (record / "select" / f"{member}.json").exists()
    }
    return rows, selection


def keep_histories(directory, histories, name):
    """Copies both stages' per-epoch logs of the run in `directory` to
    `histories/<name>-stage{1,2}.csv`."""
    histories.mkdir(parents=True, exist_ok=True)
    for stage in ("stage1", "stage2"):
        source = directory / stage / "history.csv"
        if source.exists():
            shutil.copyfile(source, histories / f"{name}-{stage}.csv")


def draw_runs(out, rows, name=None, label=None, labels=PAPER_STUDY.labels):
    """`curves.png`: both stages of every finished run whose histories were
    kept (`histories/<name>-stage1.csv`, and `-stage2.csv` if it ran), with
    its best epoch and its stage-2 target. `name(row)` gives a row's run
    name (default `<member>-seed<seed>`), `label(row)` its legend entry."""
    name = name or (lambda row: f"{row['member']}-seed{row['seed']}")
    label = label or (lambda row: f"{labels[row['member']]}, seed {row['seed']}")
    runs = {}
    for row in rows:
        stage1, stage2 = (
            out / "histories" / f"{name(row)}-stage{i}.csv" for i in (1, 2)
        )
        if not stage1.exists():
            continue
        second = kg.plots.read_history(stage2) if stage2.exists() else {}
        runs[label(row)] = {
            "stage1": kg.plots.read_history(stage1),
            "stage2": second,
            "target": row["target"] if second.get("val_loss") else None,
        }
    if runs:
        kg.plots.plot_protocol_runs(runs, out / "curves.png")
    return bool(runs)


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), (values.std(ddof=1) if len(values) > 1 else float("nan"))


def _cell(values):
    mean, std = _mean_std(values)
    if len(values) == 1:
        return f"{mean:.2%}"
    return f"{mean:.2%} ± {std:.2%} (n={len(values)})"


def write_tables(out, rows, selection, table=1, study=PAPER_STUDY):
    """Writes `results.md` and `results.json` from the finished runs."""
    by_member = {}
    for row in rows:
        by_member.setdefault(row["member"], []).append(row)
    n_test = 10000
    lines = [
        (
            "Table I: permutation-invariant MNIST"
            if table == 1
            else "Table II: MNIST, convolutional maxout"
        )
        + ", test error (10,000 test images; "
        f"the standard error of one error rate near 0.8% is "
        f"{np.sqrt(0.008 * 0.992 / n_test):.2%}).",
        "",
        "| model | sigma | paper | ours | best epoch | continue epochs | "
        "FGSM acc. (linf 0.1) | PGD-20/FGM linf 0.1 | l2 1 | "
        "standard suite linf 0.1 (first test images) | l2 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    papers = PAPER[table] if study.paper is None else study.paper
    for member, group in by_member.items():
        paper = papers.get(member)
        lines.append(
            f"| {study.labels[member]} | {group[0]['regularizer']['sigma']:g} | "
            f"{'' if paper is None else f'{paper:.2f}%'} | "
            f"{_cell([r['test_error'] for r in group])} | "
            f"{', '.join(str(r['best_epoch']) for r in group)} | "
            f"{', '.join(str(r['continue_epochs']) for r in group)} | "
            f"{_cell([r['fgsm_accuracy'] for r in group])} | "
            f"{_cell([r['robust']['linf 0.1'] for r in group])} | "
            f"{_cell([r['robust']['l2 1'] for r in group])} | "
            f"{_cell([r['standard']['linf 0.1']['worst case'] for r in group])} | "
            f"{_cell([r['standard']['l2 1']['worst case'] for r in group])} |"
        )
    lines += standard_suite_lines(
        {study.labels[m]: [r["standard"] for r in g] for m, g in by_member.items()},
        _cell,
    )
    lines += [
        "",
        "Table IV: test error under additive Gaussian noise (clipped to [0, 1] "
        "/ not clipped).",
        "",
        "| model | std | paper | ours, clipped | ours, not clipped |",
        "|---|---:|---:|---:|---:|",
    ]
    # The paper's Table IV has rows for its maxout networks only.
    noise_papers = PAPER_NOISE[table] if study.paper is None else {}
    for member, group in by_member.items():
        for i, std in enumerate((0.0, *NOISE_STDS)):
            paper = noise_papers.get(member, (None,) * 3)[i]
            if std == 0:
                clipped = unclipped = _cell([r["test_error"] for r in group])
            else:
                clipped = _cell([r[f"noise {std:g} clipped"]["error"] for r in group])
                unclipped = _cell([r[f"noise {std:g}"]["error"] for r in group])
            lines.append(
                f"| {study.labels[member]} | {std:g} | "
                f"{'' if paper is None else f'{paper:.2f}%'} | {clipped} | {unclipped} |"
            )
    if selection:
        lines += ["", "Sigma selection (validation accuracy after stage 1):", ""]
        for member, result in selection.items():
            pairs = ", ".join(
                f"{s:g}: {a:.2%}"
                for s, a in zip(result["sigmas"], result["val_accuracy"])
            )
            lines.append(f"- {member}: {pairs} -> {result['chosen']:g}")
    if draw_runs(out, rows, labels=study.labels):
        lines += ["", "![Both stages of every run](curves.png)"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "selection": selection}, indent=2)
    )
    print("\n".join(lines), flush=True)
