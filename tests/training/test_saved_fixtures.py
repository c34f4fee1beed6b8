"""Saved models written by keras_gradreg 0.1.0 load on every backend and
keep training as 0.1.0 trained them (`tests/fixtures/saved_0_1_0`).

The regularizer is checked through its behaviour, not its config layout: the
epoch's logged sigma, the losses and the weights after one step from the
saved optimizer state all follow from the family member and form that were
saved.
"""

import json

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from tests.fixtures.saved_0_1_0 import (
    CONTINUATION_SEED,
    FIXTURES,
    FOLDER,
    TinySubclassed,
)

# Written on JAX and compared on every backend: float32 round-off only.
RTOL, ATOL = 1e-4, 1e-6


def _expected(name):
    with np.load(FOLDER / f"{name}.expected.npz") as data:
        return dict(data)


def _expected_weights(expected):
    count = sum(key.startswith("weight_") for key in expected)
    return [expected[f"weight_{i}"] for i in range(count)]


def _load(name):
    keras.utils.set_random_seed(CONTINUATION_SEED)
    return keras.saving.load_model(FOLDER / f"{name}.keras")


def _continue(model, expected):
    """One epoch on the fixture's batch as a single batch, as 0.1.0 did."""
    x, y = expected["x"], expected["y"]
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return {key: values[0] for key, values in history.history.items()}


def test_every_fixture_file_is_tested():
    manifest = json.loads((FOLDER / "manifest.json").read_text())
    assert manifest["written_by"]["keras_gradreg"] == "0.1.0"
    assert sorted(manifest["fixtures"]) == sorted(FIXTURES)
    saved = sorted(path.name.removesuffix(".keras") for path in FOLDER.glob("*.keras"))
    assert saved == sorted(FIXTURES)
    for name in FIXTURES:
        assert (FOLDER / f"{name}.expected.npz").is_file()


@pytest.mark.parametrize("name", FIXTURES)
def test_saved_model_loads_and_keeps_training(name):
    expected = _expected(name)
    if name == "penalty_l2" and keras.backend.backend() == "torch":
        # The file holds the jit_compile=True that "auto" resolved to on JAX;
        # torch.compile cannot differentiate twice, so it trains eagerly.
        with pytest.warns(UserWarning, match="trains eagerly"):
            model = _load(name)
        assert model.jit_compile is False
    else:
        model = _load(name)
    if keras.backend.backend() == "torch":
        # Eagerly: torch.compile takes minutes a model, and its step is
        # compared with the eager one in test_models.py.
        model.jit_compile = False
    assert isinstance(model, kg.GradRegModel)
    if name.startswith("subclassed"):
        assert type(model) is TinySubclassed and model.units == 5
    if name.startswith("maxout"):
        maxout = [
            layer for layer in model.layers if isinstance(layer, kg.layers.Maxout)
        ]
        assert len(maxout) == 1 and maxout[0].max_norm == pytest.approx(1.9365)
    # The optimizer state of the two steps taken before saving.
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
    before = model.get_weights()

    logs = _continue(model, expected)

    after = model.get_weights()
    assert len(after) == len(_expected_weights(expected))
    np.testing.assert_allclose(logs["sigma"], expected["log_sigma"], rtol=1e-6)
    np.testing.assert_allclose(
        logs["clean_loss"], expected["log_clean_loss"], rtol=RTOL, atol=ATOL
    )
    if FIXTURES[name]:
        for key in ("loss", "adv_loss", "grad_norm"):
            np.testing.assert_allclose(
                logs[key], expected[f"log_{key}"], rtol=RTOL, atol=ATOL, err_msg=key
            )
        for i, (weight, reference) in enumerate(
            zip(after, _expected_weights(expected))
        ):
            np.testing.assert_allclose(
                weight, reference, rtol=RTOL, atol=ATOL, err_msg=f"weight {i}"
            )
    else:
        # The label-free member starts its power iteration at a random
        # direction drawn by the backend's own generator: the weights are
        # not reproducible, but the step must train that member. Its
        # adversarial term is the divergence KL(p(x) || p(x + r)) with
        # virtual_weight 1, well below a crossentropy at moved inputs.
        assert 0 < logs["adv_loss"] < logs["clean_loss"]
        np.testing.assert_allclose(
            logs["loss"], logs["clean_loss"] + logs["adv_loss"], rtol=1e-5
        )
        assert all(np.all(np.isfinite(weight)) for weight in after)
        assert any(not np.allclose(b, a) for b, a in zip(before, after))
