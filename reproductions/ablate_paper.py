"""Ablations that locate Table I's gap to the paper, one change at a time.

Table I's runs (`reproduce_paper.py`) land plain maxout at 1.08% (paper
0.94%) and the l2 member at 1.10% (paper 0.78%) over three seeds. Each run
here changes one thing of a seed-0 run of Table I and trains it with the
same protocol (stage 1 with early stopping, then stage 2 until matched),
so its test error compares with Table I's seed 0 (plain 1.05%, l2 1.07%):

- `l2-perturb` (form): the l2 member trained on perturbed images,
  `0.5 L(x) + 0.5 L(x + r*)` with `r* = sigma g / ||g||_2`, as Goodfellow
  et al. train FGSM (the family's perturbed-input form) instead of the
  exact penalty; sigma chosen on the validation split among 0.3, 1 and 3.
  The perturbed pass draws the clean pass's dropout masks (the library's
  default, `share_noise=True`).
- `l2-perturb-fresh` (form, noise): the same, at the sigma chosen for
  `l2-perturb`, with fresh masks in the perturbed pass
  (`share_noise=False`), as Table I's FGSM row trained and as training
  code that calls the model twice does.
- `l2-sigma-0.1` (sigma): the l2 penalty at the other end of the
  candidates Table I's selection could not separate (0.1 against 0.3).
- `plain-glorot` (init): Glorot-uniform kernels instead of pylearn2's
  uniform +-0.005.
- `plain-scaled-input-dropout` (dropout): kept input pixels scaled by
  1 / 0.8, as Keras's `Dropout` does, instead of pylearn2's unscaled ones.

Runs are checkpointed, resumable and recorded as `reproduce_paper.py`'s
are, in their own folders (`settings.json` refuses a resume with other
settings).

Usage:
    KERAS_BACKEND=jax python -m reproductions.ablate_paper \
        --record docs/data/paper-table1-ablations
    # the fresh-mask row on unclipped images, at the sigma chosen above:
    KERAS_BACKEND=jax python -m reproductions.ablate_paper \
        --members l2-perturb-fresh --sigma 1 --no-clip \
        --output runs/paper-table1-ablations-noclip \
        --record docs/data/paper-table1-ablations-noclip
"""

from __future__ import annotations

from .paper_study import Study
from .reproduce_paper import main

ABLATIONS = Study(
    members={
        "l2-perturb": {"norm": "l2", "form": "perturb", "alpha": 0.5},
        "l2-perturb-fresh": {
            "norm": "l2",
            "form": "perturb",
            "alpha": 0.5,
            "share_noise": False,
        },
        "l2-sigma-0.1": {"norm": "l2", "form": "penalty", "sigma": 0.1},
        "plain-glorot": {"sigma": 0.0},
        "plain-scaled-input-dropout": {"sigma": 0.0},
    },
    grids={"l2-perturb": (0.3, 1.0, 3.0)},
    shared_sigma={"l2-perturb-fresh": "l2-perturb"},
    labels={
        "l2-perturb": "l2 member, perturbed-input form (alpha 0.5)",
        "l2-perturb-fresh": "l2 member, perturbed-input form, fresh dropout masks",
        "l2-sigma-0.1": "l2 penalty at sigma 0.1",
        "plain-glorot": "maxout + dropout, Glorot-uniform init",
        "plain-scaled-input-dropout": "maxout + dropout, input dropout scaled by 1/0.8",
    },
    networks={
        "plain-glorot": {"kernel_initializer": "glorot_uniform"},
        "plain-scaled-input-dropout": {"input_dropout_scale": None},
    },
)

if __name__ == "__main__":
    main(
        study=ABLATIONS,
        description=__doc__.split("\n")[0],
        default_output="runs/paper-table1-ablations",
    )
