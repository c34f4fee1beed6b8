"""PreActResNet-18: the published structure and weight count, and its
argument checks."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.recipes.preact_resnet import CIFAR10_MEAN, CIFAR10_STD


def _of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_full_width_network_has_preact_resnet18s_weight_count():
    model = kg.models.preact_resnet18(kernel_initializer="zeros")  # fast to build
    # Wong et al.'s and RobustBench's PreActResNet18 on CIFAR-10 (its
    # PyTorch parameters; the batch statistics are buffers there):
    # stem 3*64*9; stages of (bn 2c_in + conv 9 c_in c + bn 2c + conv 9 c c
    # [+ shortcut c_in c]) x 2; final bn 2*512; dense 512*10 + 10.
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_172_170
    convs = _of(model, keras.layers.Conv2D)
    assert [c.filters for c in convs if c.name.endswith("_shortcut")] == [128, 256, 512]
    assert len(convs) == 1 + 16 + 3  # stem, two per block, three shortcuts
    assert not any(c.use_bias for c in convs)
    norms = _of(model, keras.layers.BatchNormalization)
    assert len(norms) == 17 and {(n.momentum, n.epsilon) for n in norms} == {
        (0.9, 1e-5)
    }
    assert model.output_shape == (None, 10)


def test_narrow_network_forwards_and_trains_one_step():
    model = kg.models.preact_resnet18(
        width=2, norm="linf", sigma=8 / 255, form="fgsm_rs", input_range=(0, 1),
        weight_decay=5e-4,
    )  # fmt: skip
    assert [c.filters for c in _of(model, keras.layers.Conv2D)][-3:] == [16, 16, 16]
    # Weight decay: (w / 2) ||theta||^2 on kernels, the dense bias, BN scales.
    assert len(model.losses) == 20 + 1 + 1 + 2 * 17
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype="float32")
    model.compile("sgd", "sparse_categorical_crossentropy")
    logs = model.fit(x, np.arange(4), batch_size=4, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and logs["loss"][0] > logs["adv_loss"][0]
    probabilities = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_inputs_are_normalized_inside_unless_asked_not_to():
    model = kg.models.preact_resnet18(width=2)
    layer = model.get_layer("normalize")
    x = np.full((1, 4, 4, 3), 0.5, "float32")
    expected = (0.5 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    np.testing.assert_allclose(np.asarray(layer(x))[0, 0, 0], expected, rtol=1e-5)
    plain = kg.models.preact_resnet18(width=2, mean=None, std=None)
    assert "normalize" not in [layer.name for layer in plain.layers]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"width": 0}, "width=0"),
        ({"width": 1.5}, "width=1.5"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"input_shape": (32, 32)}, r"input_shape=\(32, 32\)"),
        ({"input_shape": (32, 0, 3)}, r"input_shape=\(32, 0, 3\)"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"mean": (0.5,)}, r"mean=\(0.5,\)"),
        ({"std": (0.2, 0.2, 0.0)}, r"std=\(0.2, 0.2, 0.0\)"),
    ],
)
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        kg.models.preact_resnet18(**arguments)
