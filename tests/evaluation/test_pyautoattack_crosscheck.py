"""l1-APGD and the randomized-model (EOT) APGD against AutoAttack's own code
(`pyautoattack`) on the same network: on the torch backend a Keras model is
a `torch.nn.Module`, so the reference attacks exactly the model ours does.

`KERAS_GRADREG_CROSSCHECK_POINTS` sets the number of test images (default
100) and `KERAS_GRADREG_CROSSCHECK_STEPS` the steps of both sides (default
20); run with `-s` to see the numbers (docs/performance.md records 100
steps)."""

import os

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.evaluation.attacks.eot import accuracy_over_draws
from tests.conftest import BACKEND
from tests.helpers import mnist_mlp, requires_mnist

autopgd = (
    pytest.importorskip("pyautoattack.autopgd_base") if BACKEND == "torch" else None
)
pytestmark = [
    pytest.mark.skipif(BACKEND != "torch", reason="pyautoattack runs on torch"),
    requires_mnist,
]
POINTS = int(os.environ.get("KERAS_GRADREG_CROSSCHECK_POINTS", "100"))
STEPS = int(os.environ.get("KERAS_GRADREG_CROSSCHECK_STEPS", "20"))


class AlwaysDropout(keras.layers.Dropout):
    """Dropout that stays on at inference (Monte-Carlo dropout)."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def _tensors(x, y):
    import torch

    return torch.tensor(x), torch.tensor(y, dtype=torch.long)


def _robust(model, x_adv, x, y, draws=1):
    clean = accuracy_over_draws(model, x, y, draws)
    return float(
        np.mean(np.minimum(clean, accuracy_over_draws(model, x_adv, y, draws)))
    )


@pytest.fixture(scope="module")
def mnist_model():
    return mnist_mlp(POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("targeted", [False, True])
def test_l1_apgd_matches_pyautoattack(mnist_model, targeted):
    """AutoAttack's standard l1 configuration (the 3 eps, 2 eps, eps
    schedule), one restart, on MNIST at l1 radius 5."""
    model, x, y = mnist_model
    eps = 5.0
    common = dict(n_iter=STEPS, norm="L1", n_restarts=1, eps=eps, seed=0,
                  use_largereps=True, device="cpu")  # fmt: skip
    if targeted:
        reference = autopgd.APGDAttack_targeted(model, n_target_classes=5, **common)
        ours = kg.attacks.apgd_targeted(
            model, x, y, "l1", eps, steps=STEPS, target_classes=5
        )
    else:
        reference = autopgd.APGDAttack(model, loss="ce", **common)
        ours = kg.attacks.apgd(model, x, y, "l1", eps, steps=STEPS)
    theirs = reference.perturb(*_tensors(x, y)).detach().numpy()
    assert np.abs(ours - x).reshape(len(x), -1).sum(1).max() <= eps * (1 + 1e-5)
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    theirs, ours = _robust(model, theirs, x, y), _robust(model, ours, x, y)
    print(f"\nl1 {eps} targeted={targeted}: ours {ours:.2%}, pyautoattack {theirs:.2%}")
    assert abs(ours - theirs) <= 0.01 + 2 / POINTS, (ours, theirs)
    assert ours < _robust(model, x, x, y) - 0.1  # the radius breaks points


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cross_entropy", "dlr"])
def test_eot_apgd_matches_pyautoattack(loss):
    """AutoAttack's "rand" version's attacks (20 draws per gradient, one
    restart) on an MLP with dropout on at inference, at linf 0.05; both
    scored by the mean over 20 draws. Ours within a point of theirs, or
    stronger: the reference returns the clean input for a point that its
    last draw did not misclassify, ours the point of highest mean loss,
    which other draws may misclassify."""
    model, x, y = mnist_mlp(POINTS, AlwaysDropout(0.3))
    eps = 0.05
    reference = autopgd.APGDAttack(
        model, n_iter=STEPS, norm="Linf", n_restarts=1, eps=eps, seed=0,
        loss={"cross_entropy": "ce", "dlr": "dlr"}[loss], eot_iter=20, device="cpu",
    )  # fmt: skip
    theirs = reference.perturb(*_tensors(x, y)).detach().numpy()
    ours = kg.attacks.apgd(
        model, x, y, "linf", eps, steps=STEPS, loss=loss, eot_samples=20
    )
    theirs = _robust(model, theirs, x, y, draws=20)
    ours = _robust(model, ours, x, y, draws=20)
    print(f"\nlinf {eps} EOT {loss}: ours {ours:.2%}, pyautoattack {theirs:.2%}")
    assert ours <= theirs + 0.01 + 2 / POINTS, (ours, theirs)
    assert ours < _robust(model, x, x, y, draws=20) - 0.05
