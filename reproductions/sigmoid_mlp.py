"""Table I's sigmoid MLP row: plain and the l2 member, on the maxout protocol.

The paper reports 0.93% test error for a sigmoid MLP trained with its
p = 2 member on permutation-invariant MNIST. Where the paper's description
of that network is not at hand, this study assumes:

- **the network**: the classic 784-800-800-10 MLP (Simard et al. 2003;
  the dropout papers' MLPs), logistic sigmoid hidden units, softmax
  output;
- **its training**: Table I's maxout MLP's (pylearn2's `mnist_pi.yaml`
  protocol: input dropout 0.2 with unscaled kept pixels, hidden dropout
  0.5, max column norm 1.9365 on every layer, batch 100, SGD with the
  momentum ramp, early stopping then stage 2) but for the **learning
  rate, 3.0** instead of 0.1: sigmoid units pass back at most a quarter
  of the gradient, and on seed 0 the validation accuracy after six epochs
  was 90.6% at 0.1, 94.6% at 1, 95.9% at 3 and 88.7% at 10;
- **its initialization**: Glorot-uniform, the initialization designed for
  sigmoid units (Glorot & Bengio 2010). The maxout papers' uniform
  +-0.005 leaves sigmoid units on a plateau: 31% validation accuracy
  after three epochs;
- **the l2 member**: trained as the maxout MLP's p = 2 row that reaches
  the paper's gain, on perturbed images with fresh dropout masks,
  `0.5 L(x) + 0.5 L(x + sigma g / ||g||_2)`, at that row's sigma = 1
  (no selection of its own).

Runs are checkpointed, resumable and recorded as `reproduce_paper.py`'s
are (`settings.json` refuses a resume with other settings); the two
members can run side by side in two processes on one folder.

Usage:
    KERAS_BACKEND=jax python -m reproductions.sigmoid_mlp --seeds 0 \
        --no-clip --max-epochs 250 --continue-max-epochs 100 \
        --output runs/paper-table1-sigmoid --record docs/data/paper-table1-sigmoid
"""

from __future__ import annotations

import keras

import keras_gradreg as kg

from .paper_study import Study
from .reproduce_paper import main


def sigmoid_mlp(
    units=800,
    input_dropout=0.2,
    hidden_dropout=0.5,
    max_norm=kg.models.MNIST_MAX_NORM,
    kernel_initializer="glorot_uniform",
    **regularizer,
):
    """Flatten -> dropout(0.2, kept pixels unscaled) -> 2 x [Dense(units,
    sigmoid) -> dropout(0.5)] -> softmax(10), every kernel column
    max-norm constrained to `max_norm`: an uncompiled `GradRegModel`.
    `kernel_initializer` is a name (each layer gets an instance of its
    own)."""
    inputs = keras.Input((28, 28), name="image")
    h = keras.layers.Flatten()(inputs)
    h = kg.layers.ScaledDropout(input_dropout, scale=1.0)(h)
    dense = {
        "kernel_constraint": keras.constraints.MaxNorm(max_norm, axis=0),
    }
    for i in range(2):
        h = keras.layers.Dense(
            units, activation="sigmoid", name=f"sigmoid_{i + 1}",
            kernel_initializer=keras.initializers.get(kernel_initializer), **dense,
        )(h)  # fmt: skip
        h = keras.layers.Dropout(hidden_dropout)(h)
    outputs = keras.layers.Dense(
        10, activation="softmax", name="softmax",
        kernel_initializer=keras.initializers.get(kernel_initializer), **dense,
    )(h)  # fmt: skip
    return kg.GradRegModel(inputs, outputs, name="mnist_sigmoid_mlp", **regularizer)


SIGMOID_STUDY = Study(
    members={
        "plain": {"sigma": 0.0},
        "l2-perturb-fresh": {
            "norm": "l2",
            "form": "perturb",
            "alpha": 0.5,
            "sigma": 1.0,
            "share_noise": False,
        },
    },
    grids={},
    labels={
        "plain": "sigmoid MLP + dropout",
        "l2-perturb-fresh": "sigmoid MLP, l2 member on perturbed images, fresh masks",
    },
    every_seed=("plain", "l2-perturb-fresh"),
    builder=sigmoid_mlp,
    protocol={"learning_rate": 3.0},
    paper={"l2-perturb-fresh": 0.93},
)

if __name__ == "__main__":
    main(
        study=SIGMOID_STUDY,
        description=__doc__.split("\n")[0],
        default_output="runs/paper-table1-sigmoid",
    )
