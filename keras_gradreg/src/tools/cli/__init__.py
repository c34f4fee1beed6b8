"""The `keras-gradreg` command line (also `python -m keras_gradreg`).

    keras-gradreg train --dataset mnist --model maxout_mlp --norm linf \\
        --sigma 0.1 --form penalty --epochs 10 --output runs/linf

writes to the output folder: `model.keras`, `history.csv` (per epoch),
`results.json` (clean test accuracy and error, FGSM accuracy, wall time, all
settings, backend, library versions) and learning-curve PNGs.

    keras-gradreg train --protocol maxout --model maxout_mlp --norm l2 \\
        --sigma 0.3 --output runs/l2-maxout

trains the paper's network with the maxout papers' two-stage protocol
(`protocol.train_then_continue` on `models.paper_network`), checkpointed
every epoch under `<output>/protocol/`: the same command resumes it.

    keras-gradreg evaluate --model-path runs/linf/model.keras --dataset mnist \\
        --norms linf l2 --attacks fgm pgd --steps 20 --output runs/linf/robustness

attacks a saved model on the test set and writes `report.md` (clean and
robust accuracy per attack, norm and eps, with the worst case and the
gradient-masking checks), `robustness.json`, `robust_accuracy.png` and
`gradients.png` (inputs, dL/dx and worst-case perturbations).
"""

from __future__ import annotations

import sys

from keras_gradreg.src.tools.cli._evaluate import evaluate
from keras_gradreg.src.tools.cli._parser import build_parser
from keras_gradreg.src.tools.cli._train import train

__all__ = ["build_parser", "evaluate", "main", "train"]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "evaluate":
            evaluate(args)
    except (ValueError, FileNotFoundError) as error:
        message = (
            str(error).splitlines()[0] if isinstance(error, ValueError) else str(error)
        )
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
