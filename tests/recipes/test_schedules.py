"""The cyclic learning rate against its closed form."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg


def closed_form(t, top, total, peak, bottom):
    """Wong et al.'s `CyclicLR` / Andriushchenko & Flammarion's `np.interp`."""
    return np.interp(t, [0, peak * total, total], [bottom, top, bottom])


@pytest.mark.parametrize("peak, bottom", [(0.5, 0.0), (0.4, 0.0), (0.25, 0.01)])
def test_schedule_is_piecewise_linear_through_its_peak(peak, bottom):
    total = 390 * 15
    schedule = kg.optimizers.CyclicLearningRate(0.2, total, peak, bottom)
    steps = np.array([0, 1, 7, total * peak - 1, total * peak, total * peak + 3,
                      total - 1, total, total + 50]).astype(int)  # fmt: skip
    values = np.array([float(schedule(t)) for t in steps])
    np.testing.assert_allclose(
        values, closed_form(steps, 0.2, total, peak, bottom), rtol=1e-5, atol=1e-7
    )
    assert values.max() <= 0.2 * (1 + 1e-6) and values[0] == pytest.approx(bottom)


def test_schedule_serializes_and_drives_an_optimizer():
    schedule = kg.optimizers.CyclicLearningRate(0.3, 100, peak=0.4)
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, kg.optimizers.CyclicLearningRate)
    assert restored.get_config() == schedule.get_config()
    optimizer = keras.optimizers.SGD(schedule)
    assert float(optimizer.learning_rate) == 0.0  # update 0
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert again._learning_rate.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((0.0, 10), "max_learning_rate=0.0"),
        ((0.1, 0), "total_steps=0"),
        ((0.1, 10, 1.0), "peak=1.0"),
        ((0.1, 10, 0.0), "peak=0.0"),
        ((0.1, 10, 0.5, 0.2), "min_learning_rate=0.2"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        kg.optimizers.CyclicLearningRate(*arguments)
