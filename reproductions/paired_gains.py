"""Table I's rows with their gains over plain maxout, paired by seed.

Every row's test error is compared with plain maxout's of the same seed
(same data order, initialization and dropout draws up to where the
objectives differ): the gain of seed s is `member(s) - plain(s)`, and the
table gives the mean and standard deviation of those differences over the
seeds both have, next to the paper's numbers and gains. It reads the
records folders the reproduction scripts write (`results/<member>-seed<s>.json`),
so it runs anywhere the repository is checked out.

Usage:
    python -m reproductions.paired_gains \
        --plain docs/data/paper-table1 \
        --row "FGSM training, clipped=docs/data/paper-table1:fgsm" \
        --row "FGSM training, unclipped=docs/data/paper-table1-noclip:fgsm" \
        --output docs/data/paper-table1-gains.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .paper_study import PAPER

#: The standard error of one error rate near 0.9% on 10,000 test images.
TEST_SE = 100 * math.sqrt(0.009 * 0.991 / 10000)


def errors(folder: Path, member: str) -> dict:
    """Seed -> test error (%) of every finished run of `member` in `folder`."""
    found = {}
    for path in sorted((folder / "results").glob(f"{member}-seed*.json")):
        if path.stem.endswith("-standard"):
            continue
        row = json.loads(path.read_text())
        if row.get("member", member) == member:
            found[int(row["seed"])] = 100 * row["test_error"]
    return found


def spread(values) -> str:
    """`mean ± sd (n)`, or the single value."""
    values = list(values)
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (n={len(values)})"


def signed(values) -> str:
    values = list(values)
    if not values:
        return "—"
    mean = f"{np.mean(values):+.2f}".replace("-", "−")
    if len(values) == 1:
        return f"{mean} (n=1)"
    return f"{mean} ± {np.std(values, ddof=1):.2f} (n={len(values)})"


def table(plain: dict, rows: list) -> str:
    """The Markdown table: one line per `(label, errors by seed, paper)`."""
    lines = [
        "| model | test error (%) | seeds | gain over plain, paired by seed | "
        "paper | paper's gain |",
        "|---|---:|---|---:|---:|---:|",
        f"| maxout + dropout | {spread(plain.values())} | "
        f"{', '.join(f'{e:.2f}' for e in plain.values())} | | "
        f"{PAPER[1]['plain']:.2f} | |",
    ]
    for label, found, paper in rows:
        seeds = sorted(set(found) & set(plain))
        gains = [found[s] - plain[s] for s in seeds]
        paper_gain = (
            f"{paper - PAPER[1]['plain']:+.2f}".replace("-", "−") if paper else ""
        )
        lines.append(
            f"| {label} | {spread(found.values())} | "
            f"{', '.join(f'{s}: {found[s]:.2f}' for s in sorted(found))} | "
            f"{signed(gains)} | {paper or ''} | {paper_gain} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plain", required=True, help="records folder of plain")
    parser.add_argument(
        "--row", action="append", default=[],
        help='"label=folder:member[:paper error]", one per row',
    )  # fmt: skip
    parser.add_argument("--output", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    plain = errors(Path(args.plain), "plain")
    if not plain:
        parser.error(f"--plain holds no finished plain run. Received: {args.plain}")
    rows = []
    for spec in args.row:
        label, _, source = spec.rpartition("=")
        parts = source.split(":")
        if not label or len(parts) not in (2, 3):
            parser.error(
                f'--row must read "label=folder:member[:paper error]". Received: {spec}'
            )
        paper = float(parts[2]) if len(parts) == 3 else None
        found = errors(Path(parts[0]), parts[1])
        if not found:
            parser.error(f"--row {spec!r}: no finished run of {parts[1]} in {parts[0]}")
        rows.append((label, found, paper))
    text = table(plain, rows)
    text += (
        f"\n\nThe standard error of one error rate near 0.9% on 10,000 test "
        f"images is {TEST_SE:.2f} points; of a difference between two models "
        f"on the same images at most {math.sqrt(2) * TEST_SE:.2f} (less, as "
        f"both err on the same hard digits).\n"
    )
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return text


if __name__ == "__main__":
    main()
