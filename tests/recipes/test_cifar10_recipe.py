"""The CIFAR-10 recipe: its settings, and what it compiles and fits."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.recipes import CIFAR10_RECIPES, CIFAR10Recipe, cifar10_recipe


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 32, 32, 3), dtype="float32"), np.arange(n) % 10


def test_presets_hold_the_papers_settings():
    wong = CIFAR10_RECIPES["fgsm_rs"]
    assert (wong.form, wong.epochs, wong.batch_size) == ("fgsm_rs", 15, 128)
    assert (wong.learning_rate, wong.peak, wong.momentum) == (0.2, 0.5, 0.9)
    assert (wong.weight_decay, wong.sigma, wong.alpha) == (5e-4, 8 / 255, 0.0)
    align = CIFAR10_RECIPES["gradalign"]
    assert dict(align.form_arguments) == {"weight": 0.2, "step": 1.0}
    assert (align.epochs, align.learning_rate, align.peak) == (30, 0.3, 0.4)
    assert not align.normalize and align.drop_remainder
    trades = CIFAR10_RECIPES["trades"]
    assert dict(trades.form_arguments) == {"beta": 6.0, "steps": 10}


def test_presets_build_their_members():
    align = CIFAR10_RECIPES["gradalign"].replace(width=2).build()
    assert align.regularizer.form == kg.forms.GradAlign(weight=0.2, step=1.0)
    assert "normalize" not in [layer.name for layer in align.layers]
    trades = CIFAR10_RECIPES["trades"].replace(width=2).build()
    assert trades.regularizer.form == kg.forms.TRADES(beta=6.0, steps=10)
    assert (trades.regularizer.alpha, trades.regularizer.sigma) == (0.0, 8 / 255)


def test_prepare_compiles_the_member_on_the_cyclic_schedule():
    x, y = _data(40)
    recipe = CIFAR10Recipe(
        form="multistep", form_arguments=(("steps", 2),), width=2, epochs=3,
        batch_size=16,
    )  # fmt: skip
    model, fit_arguments = recipe.prepare(x, y, steps=2)
    reg = model.regularizer
    assert (reg.norm, reg.sigma, reg.input_range) == ("linf", 8 / 255, (0.0, 1.0))
    assert reg.form == kg.forms.Multistep(steps=2)
    schedule = model.optimizer._learning_rate  # the schedule itself
    assert isinstance(schedule, kg.optimizers.CyclicLearningRate)
    assert (schedule.total_steps, schedule.max_learning_rate) == (3 * 2, 0.2)
    assert not model.optimizer.use_ema
    batches = fit_arguments["x"]
    assert isinstance(batches, kg.datasets.AugmentedBatches) and len(batches) == 2
    assert fit_arguments["epochs"] == 3 and len(fit_arguments["callbacks"]) == 1
    assert batches.augmentation.padding == 4


@pytest.mark.slow  # compiles PreActResNet-18's mixed-precision step (30 s)
def test_averaged_weights_replace_the_trained_ones_under_mixed_precision():
    x, y = _data(16)
    previous = keras.config.dtype_policy().name
    model, fit_arguments = cifar10_recipe(
        x, y, width=2, epochs=2, batch_size=8, ema_momentum=0.5,
        mixed_precision="mixed_float16",
    )  # fmt: skip
    assert keras.config.dtype_policy().name == previous  # restored
    assert model.compute_dtype == "float16"
    assert model.get_layer("softmax").compute_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    trained = {}
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: trained.update(
            weights=[np.array(w) for w in model.trainable_weights]
        )
    )
    fit_arguments["callbacks"].append(record)
    logs = model.fit(**fit_arguments, verbose=0).history
    assert all(np.isfinite(logs[k]).all() for k in ("loss", "adv_loss", "grad_norm"))
    averages = model.optimizer.inner_optimizer._model_variables_moving_average
    final = [np.array(w) for w in model.trainable_weights]
    for average, weight in zip(averages, final):
        np.testing.assert_array_equal(np.array(average), weight)
    assert any(not np.allclose(a, b) for a, b in zip(trained["weights"], final))
    copy = CIFAR10Recipe(width=2, mixed_precision="mixed_float16").build(float32=True)
    copy.set_weights(model.get_weights())
    assert copy.compute_dtype == "float32"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "epochs=0"),
        ({"mixed_precision": "float16"}, "mixed_precision='float16'"),
        ({"padding_mode": "edge"}, "padding_mode='edge'"),
        ({"ema_momentum": 1.0}, "ema_momentum=1.0"),
        ({"peak": 1.0}, "peak=1.0"),
        ({"form_arguments": {"weight": 0.2}}, "form_arguments="),
    ],
)
def test_bad_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        CIFAR10Recipe(**changes)


def test_unknown_recipe_is_refused_by_name():
    x, y = _data()
    with pytest.raises(ValueError, match="recipe='pgd'"):
        cifar10_recipe(x, y, "pgd")
