"""Our APGD, FAB-T and Square against an independent implementation (torchattacks) on the
same network: on the torch backend a Keras model is a `torch.nn.Module`, so
torchattacks attacks exactly the model ours does."""

import numpy as np
import pytest

import keras_gradreg as kg
from tests.conftest import BACKEND
from tests.helpers import mnist_mlp, requires_mnist

torchattacks = pytest.importorskip("torchattacks") if BACKEND == "torch" else None
pytestmark = [
    pytest.mark.skipif(BACKEND != "torch", reason="torchattacks runs on torch"),
    requires_mnist,
]


@pytest.fixture(scope="module")
def mnist_model():
    import torch

    model, x_test, y_test = mnist_mlp(300)
    torch_x = torch.tensor(x_test)
    torch_y = torch.tensor(y_test, dtype=torch.long)
    return model, x_test, y_test, torch_x, torch_y


def _robust(model, x_adv, x, y):
    correct = kg.attacks.correct_predictions(model, x, y)
    return np.mean(correct & kg.attacks.correct_predictions(model, x_adv, y))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_apgd_matches_torchattacks(mnist_model, norm, eps):
    model, x, y, torch_x, torch_y = mnist_model
    theirs_norm = {"linf": "Linf", "l2": "L2"}[norm]
    theirs_ce = torchattacks.APGD(
        model, norm=theirs_norm, eps=eps, steps=50, n_restarts=1, loss="ce", seed=0
    )(torch_x, torch_y)
    theirs_t = torchattacks.APGDT(
        model, norm=theirs_norm, eps=eps, steps=50, n_restarts=1, n_classes=10, seed=0
    )(torch_x, torch_y)
    ours_ce = kg.attacks.apgd(model, x, y, norm, eps, steps=50)
    ours_t = kg.attacks.apgd_targeted(model, x, y, norm, eps, steps=50)
    theirs_ce = _robust(model, theirs_ce.detach().numpy(), x, y)
    theirs_t = _robust(model, theirs_t.detach().numpy(), x, y)
    ours_ce, ours_t = _robust(model, ours_ce, x, y), _robust(model, ours_t, x, y)
    # Ours within 1 point of theirs, or lower (stronger).
    assert ours_ce <= theirs_ce + 0.01, (ours_ce, theirs_ce)
    assert ours_t <= theirs_t + 0.01, (ours_t, theirs_t)
    assert ours_ce < _robust(model, x, x, y)  # the attack does something


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_square_matches_torchattacks(mnist_model, norm, eps):
    model, x, y, torch_x, torch_y = mnist_model
    theirs = torchattacks.Square(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=1000,
        n_restarts=1, p_init=0.8, loss="margin", seed=0,
    )(torch_x, torch_y)  # fmt: skip
    ours = kg.attacks.square(
        model, x, y, norm, eps, queries=1000, data_format="channels_first"
    )
    theirs = _robust(model, theirs.detach().numpy(), x, y)
    ours = _robust(model, ours, x, y)
    # A random search: ours within 2 points of theirs, or lower.
    assert ours <= theirs + 0.02, (ours, theirs)
    assert ours < _robust(model, x, x, y)


@pytest.mark.slow
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_fab_t_matches_torchattacks(mnist_model, norm, eps):
    """FAB-T is deterministic with one restart (no random start), and both
    implement the same iteration: the robust accuracies agree to a point.
    20 steps instead of AutoAttack's 100 keep the reference's run short."""
    model, x, y, torch_x, torch_y = mnist_model
    theirs = torchattacks.FAB(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=20,
        n_restarts=1, multi_targeted=True, n_classes=10, seed=0,
    )(torch_x, torch_y)  # fmt: skip
    ours = kg.attacks.fab_targeted(model, x, y, norm, eps, steps=20)
    theirs = _robust(model, theirs.detach().numpy(), x, y)
    ours = _robust(model, ours, x, y)
    assert abs(ours - theirs) <= 0.01, (ours, theirs)
    assert ours < _robust(model, x, x, y) - 0.1  # the radius breaks points
