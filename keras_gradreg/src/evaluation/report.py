"""What `evaluate_robustness` measured, and its formats: a Markdown table,
JSON (written and read back), and a RobustBench-style model card."""

from __future__ import annotations

import dataclasses
import json
import os

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.family.norms import canonical_norm

WORST_CASE = "worst case"
#: RobustBench's name of each threat model (its `model_info/<dataset>/<threat
#: model>/` folders).
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


@keras_gradreg_export("keras_gradreg.RobustnessReport")
@dataclasses.dataclass
class RobustnessReport:
    """What `evaluate_robustness` measured.

    Attributes:
        clean_accuracy: accuracy on the unperturbed inputs.
        rows: one dict per (attack, norm, eps) with keys "attack", "norm",
            "eps" and "accuracy"; attack "worst case" is the per-example
            worst over attacks. An attack's row also has "attacked" (the
            points it ran on: in a cascade, those the attacks before it
            left robust) and "seconds" (its wall time, scoring included).
        warnings: the gradient-masking checks that failed (also issued as
            `GradientMaskingWarning`).
        num_examples: how many examples were attacked.
        noise: one dict per Gaussian-noise std and clipping (the paper's
            Table IV; see `noise_accuracy`), with keys "std", "clip" (the
            range the noisy inputs were clipped to, or None), "accuracy"
            (the mean over draws), "spread" (their standard deviation) and
            "draws".
        suite: what the attacks were, as the table's caption says it: the
            standard suite, or attacks whose numbers are upper bounds.
        suite_name: the named suite that was run ("standard",
            "standard-no-fab" or "fast"; see `SUITES`), or "" for a list of
            attacks.
        input_range: `(low, high)` of valid inputs, or None.
        version: the keras_gradreg version that measured it.
    """

    clean_accuracy: float
    rows: list
    warnings: list
    num_examples: int
    noise: list = dataclasses.field(default_factory=list)
    suite: str = ""
    suite_name: str = ""
    input_range: tuple | None = (0.0, 1.0)
    version: str = ""

    def accuracy(self, norm, eps, attack: str = WORST_CASE) -> float:
        """The robust accuracy of one point of the table.

        Raises:
            KeyError: if the report has no such point.
        """
        norm = canonical_norm(norm)
        for row in self.rows:
            if (row["attack"], row["norm"], row["eps"]) == (attack, norm, eps):
                return row["accuracy"]
        raise KeyError(f"No result for attack={attack!r}, norm={norm!r}, eps={eps!r}")

    def noise_accuracy(self, std, clipped: bool = True) -> float:
        """The mean accuracy under Gaussian noise of `std`, the noisy inputs
        clipped to the input range or not.

        Raises:
            KeyError: if the report has no such point.
        """
        for row in self.noise:
            if row["std"] == std and (row["clip"] is not None) == clipped:
                return row["accuracy"]
        raise KeyError(f"No noise result for std={std!r}, clipped={clipped!r}")

    def threats(self) -> list:
        """The (norm, eps) points of the table, in order."""
        return list(dict.fromkeys((r["norm"], r["eps"]) for r in self.rows))

    def to_dict(self) -> dict:
        """A JSON-ready dict (plain Python types only: pairs as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text; `RobustnessReport.from_json` reads it
        back."""
        return json.dumps(dataclasses.asdict(self), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> RobustnessReport:
        """The report written by `to_json` (or the dict of `to_dict`, as
        JSON text).

        Raises:
            ValueError: if `text` is not such a report.
        """
        try:
            data = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(data) - fields
            if unknown:
                raise TypeError(f"unknown fields {sorted(unknown)}")
            report = cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "Argument `text` must be the JSON of a `RobustnessReport` (from "
                f"`to_json`): {error}. Received: text={str(text)[:80]!r}"
            ) from None
        if report.input_range is not None:
            report.input_range = tuple(report.input_range)
        for row in report.noise:
            row["clip"] = None if row["clip"] is None else tuple(row["clip"])
        return report

    def to_markdown(self) -> str:
        """The table as Markdown: one row per norm and eps, one column per
        attack plus the worst case, under a caption naming the suite and
        the library's version."""
        names = list(
            dict.fromkeys(r["attack"] for r in self.rows if r["attack"] != WORST_CASE)
        )
        columns = names + [WORST_CASE]
        lines = [
            f"Clean accuracy: {self.clean_accuracy:.2%} on {self.num_examples} examples."
        ]
        if self.suite and self.rows:
            version = f", keras_gradreg {self.version}" if self.version else ""
            lines += ["", f"Robust accuracy under the {self.suite}{version}."]
        if self.rows:
            lines += [
                "",
                "| norm | eps | " + " | ".join(columns) + " |",
                "|---|---:|" + "---:|" * len(columns),
            ]
        for norm, eps in self.threats():
            # "-" where an attack did not run at this norm (the standard
            # suite runs FAB-T and Square in linf and l2 only).
            done = {
                r["attack"] for r in self.rows if (r["norm"], r["eps"]) == (norm, eps)
            }
            cells = [
                f"{self.accuracy(norm, eps, name):.2%}" if name in done else "-"
                for name in columns
            ]
            lines.append(f"| {norm} | {eps:g} | " + " | ".join(cells) + " |")
        lines += _noise_lines(self.noise)
        if self.warnings:
            lines += ["", "Gradient-masking checks that failed:", ""]
            lines += [f"- {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _noise_lines(noise: list) -> list:
    """The noise rows as a Markdown table: accuracy (± its spread over the
    draws) per std, clipped and not."""
    if not noise:
        return []
    clip = next((r["clip"] for r in noise if r["clip"] is not None), None)
    clipped = f"clipped to [{clip[0]:g}, {clip[1]:g}]" if clip else "clipped"
    lines = [
        "",
        f"Accuracy under additive Gaussian noise (mean ± spread over "
        f"{len(noise[0]['draws'])} draws):",
        "",
        f"| noise std | {clipped} | not clipped |",
        "|---:|---:|---:|",
    ]
    for std in dict.fromkeys(r["std"] for r in noise):
        cells = [
            f"{r['accuracy']:.2%} ± {r['spread']:.2%}"
            for want in (True, False)
            for r in noise
            if r["std"] == std and (r["clip"] is not None) == want
        ]
        lines.append(f"| {std:g} | " + " | ".join(cells) + " |")
    return lines


@keras_gradreg_export("keras_gradreg.write_model_card")
def write_model_card(
    report: RobustnessReport,
    path,
    norm=None,
    eps=None,
    *,
    name: str = "",
    dataset: str = "",
    architecture: str = "",
    link: str = "",
    authors: str = "",
    venue: str = "",
    additional_data: bool = False,
    reported: float | None = None,
    footnote: str | None = None,
) -> dict:
    """Writes a RobustBench-style model card (its `model_info` JSON) for one
    threat model of a standard-suite report, and returns it.

    The card holds RobustBench's fields ("link", "name", "authors",
    "additional_data", "number_forward_passes", "dataset", "venue",
    "architecture", "eps", "clean_acc", "reported", "autoattack_acc",
    "footnote", "unreliable"; accuracies in percent as strings with two
    decimals, as RobustBench writes them; "unreliable" is true when a
    gradient-masking check failed) for `norm` and `eps`, and under
    "evaluation" the full record: library and version, suite and its
    attacks, threat model, input range, number of points, clean accuracy
    and the robust accuracy at every radius of the report. RobustBench
    files a card as `model_info/<dataset>/<Linf or L2>/<name>.json`.

    Args:
        report: a `RobustnessReport` of `evaluate_robustness(...,
            attacks="standard")` (AutoAttack's standard version).
        path: the file to write.
        norm: the threat model's norm; None when the report has one.
        eps: its radius, one of the report's; None when the norm has one.
        name: the model's name (RobustBench: the paper's title).
        dataset: the dataset, e.g. "mnist".
        architecture: the network, e.g. "maxout MLP".
        link: where the model or its paper is.
        authors: the authors.
        venue: where it was published.
        additional_data: whether training used data beyond the dataset.
        reported: the robust accuracy the authors report (a fraction);
            default the measured one.
        footnote: RobustBench's footnote; default one naming the suite,
            version and number of points.

    Returns:
        The card, as written.

    Raises:
        ValueError: for a report of another suite, or a norm or eps the
            report lacks.
    """
    if report.suite_name != "standard":
        raise ValueError(
            "A model card reports AutoAttack's standard version: argument "
            "`report` must come from `evaluate_robustness(..., attacks="
            f"'standard')`. Received: a report of suite_name={report.suite_name!r}"
        )
    threats = report.threats()
    norms = list(dict.fromkeys(n for n, _ in threats))
    if norm is None and len(norms) != 1:
        raise ValueError(
            f"Argument `norm` must be one of the report's norms {norms}. "
            f"Received: norm=None"
        )
    norm = norms[0] if norm is None else canonical_norm(norm)
    radii = [e for n, e in threats if n == norm]
    if eps is None and len(radii) == 1:
        eps = radii[0]
    if norm not in norms or eps not in radii:
        raise ValueError(
            f"Arguments `norm` and `eps` must name a threat of the report "
            f"({', '.join(f'{n} {e:g}' for n, e in threats)}). Received: "
            f"norm={norm!r}, eps={eps!r}"
        )
    robust = report.accuracy(norm, eps)
    attacks = list(dict.fromkeys(r["attack"] for r in report.rows if r["attack"] != WORST_CASE))  # fmt: skip
    if footnote is None:
        footnote = (
            f"Evaluated with keras_gradreg {report.version} ({', '.join(attacks)} "
            f"as a cascade) on {report.num_examples} test points."
        )
    card = {
        "link": link,
        "name": name,
        "authors": authors,
        "additional_data": bool(additional_data),
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": venue,
        "architecture": architecture,
        "eps": f"{eps:g}",
        "clean_acc": f"{100 * report.clean_accuracy:.2f}",
        "reported": f"{100 * (robust if reported is None else reported):.2f}",
        "autoattack_acc": f"{100 * robust:.2f}",
        "footnote": footnote,
        "unreliable": bool(report.warnings),
        "evaluation": {
            "library": "keras_gradreg",
            "version": report.version,
            "suite": report.suite,
            "attacks": attacks,
            "threat_model": THREAT_MODELS.get(norm, norm),
            "input_range": report.input_range,
            "num_examples": report.num_examples,
            "clean_accuracy": report.clean_accuracy,
            "robust_accuracy": [
                {"norm": n, "eps": e, "accuracy": report.accuracy(n, e)}
                for n, e in threats
            ],
            "warnings": report.warnings,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(card, file, indent=2)
        file.write("\n")
    return card
