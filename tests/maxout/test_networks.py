"""The paper's networks: structure, parameters, and one training step."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.maxout import networks
from keras_gradreg.src.maxout.layers import Maxout, MaxoutConv2D


def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_maxout_mlp_matches_the_published_configuration():
    model = kg.models.mnist_maxout_mlp(norm="linf", sigma=0.1)
    maxouts = _layers_of(model, Maxout)
    assert [(m.units, m.pieces) for m in maxouts] == [(240, 5), (240, 5)]
    assert all(m.max_norm == pytest.approx(1.9365) for m in maxouts)
    dropouts = (keras.layers.Dropout, kg.layers.ScaledDropout)
    assert [layer.rate for layer in _layers_of(model, dropouts)] == [0.2, 0.5, 0.5]
    # pylearn2's options: uniform init +-0.005 and unscaled input dropout.
    pylearn2 = kg.models.mnist_maxout_mlp(
        kernel_initializer=keras.initializers.RandomUniform(-0.005, 0.005),
        input_dropout_scale=1.0,
    )
    kernels = [w for w in pylearn2.trainable_weights if "kernel" in w.path]
    assert all(0 < np.abs(np.array(k)).max() <= 0.005 for k in kernels)
    # Each layer draws its own values (no shared unseeded initializer).
    assert not np.allclose(np.array(kernels[1])[:5, :5], np.array(kernels[2])[:5, :5])
    assert _layers_of(pylearn2, kg.layers.ScaledDropout)[0].scale == 1.0
    # 784*1200+1200 + 240*1200+1200 + 240*10+10 weights.
    assert model.count_params() == 784 * 1200 + 1200 + 240 * 1200 + 1200 + 2410
    assert model.regularizer == kg.GradientRegularizer(norm="linf", sigma=0.1)


def test_conv_maxout_networks_have_the_published_widths():
    mnist = kg.models.mnist_conv_maxout()
    assert [(c.filters, c.pieces, c.kernel_size) for c in _layers_of(mnist, MaxoutConv2D)] == [
        (48, 2, (8, 8)), (48, 2, (8, 8)), (24, 4, (5, 5)),
    ]  # fmt: skip
    cifar = kg.models.cifar10_conv_maxout()
    assert [c.filters for c in _layers_of(cifar, MaxoutConv2D)] == [96, 192, 192]
    assert [(m.units, m.pieces) for m in _layers_of(cifar, Maxout)] == [(500, 5)]
    small = kg.models.cifar10_conv_maxout(width=0.25)
    assert [c.filters for c in _layers_of(small, MaxoutConv2D)] == [24, 48, 48]
    with pytest.raises(ValueError, match="width=0"):
        kg.models.cifar10_conv_maxout(width=0)
    # cifar10_no_aug_valid.yaml: pads 4/3/3, input dropout 0.2 unscaled,
    # max-norms 0.9, 1.9365, 1.9365 (convolutions), 1.9 (maxout), 1.9365.
    norms = (0.9, 1.9365, 1.9365, 1.9, 1.9365)
    yaml = kg.models.cifar10_conv_maxout(
        width=0.1, paddings=(4, 3, 3), input_dropout=0.2, input_dropout_scale=1.0,
        max_norms=norms,
    )  # fmt: skip
    convs = _layers_of(yaml, MaxoutConv2D)
    assert [c.name for c in convs] == [
        "conv_maxout_1",
        "conv_maxout_2",
        "conv_maxout_3",
    ]
    assert [c.max_norm for c in convs] + [yaml.get_layer("maxout").max_norm] == (
        pytest.approx(norms[:4])
    )
    assert yaml.get_layer("softmax").kernel_constraint.max_value == pytest.approx(
        1.9365
    )
    assert tuple(convs[0].output.shape)[1:3] == (33, 33)  # 32 + 2 * 4 - 8 + 1
    with pytest.raises(ValueError, match="max_norms="):
        kg.models.cifar10_conv_maxout(max_norms=(1.0, 2.0))


def test_conv_maxout_with_pylearn2_layout_matches_mnist_yaml():
    """`paper_network("mnist_conv")` is `mnist.yaml`: zero padding 0/3/3 before "valid" convolutions and
    pooling, unscaled input dropout 0.2, max-norm 0.9 on the first layer's
    kernels and 1.9365 on the others, uniform init +-0.005."""
    model = kg.models.paper_network("mnist_conv")
    convs = _layers_of(model, MaxoutConv2D)
    assert [c.padding for c in convs] == ["valid"] * 3
    assert [c.max_norm for c in convs] == pytest.approx([0.9, 1.9365, 1.9365])
    assert [layer.padding for layer in _layers_of(model, keras.layers.ZeroPadding2D)] == [
        ((3, 3), (3, 3)), ((3, 3), (3, 3)),
    ]  # fmt: skip
    # 28 -> conv 8 -> 21 -> pool 4/2 -> 9 -> pad 3, conv 8 -> 8 -> pool -> 3
    # -> pad 3, conv 5 -> 5 -> pool 2/2 -> 2: 2 * 2 * 24 features.
    assert tuple(convs[0].output.shape) == (None, 21, 21, 48)
    assert model.layers[-1].kernel.shape == (96, 10)
    (dropout,) = _layers_of(model, kg.layers.ScaledDropout)
    assert (dropout.rate, dropout.scale) == (0.2, 1.0)
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    assert all(0 < np.abs(np.array(k)).max() <= 0.005 for k in kernels)
    default = kg.models.mnist_conv_maxout()
    assert not _layers_of(default, kg.layers.ScaledDropout)
    assert [c.padding for c in _layers_of(default, MaxoutConv2D)] == ["same"] * 3
    for bad in ((0, 3), (0, 3, -1), (0, 3, 1.5), "same"):
        with pytest.raises(ValueError, match="paddings="):
            kg.models.mnist_conv_maxout(paddings=bad)


def _largest_kernel_entry(model):
    return max(
        float(np.abs(keras.ops.convert_to_numpy(w)).max())
        for w in model.trainable_weights
        if "kernel" in w.path
    )


def test_paper_network_builds_the_protocols_networks_as_pylearn2_does():
    """One network per `MAXOUT_PROTOCOLS` entry, with pylearn2's arguments
    (init +-0.005, unscaled input dropout; CIFAR-10's max-norms and
    padding); keyword arguments replace them; another name is refused."""
    assert set(networks._PAPER_NETWORKS) == set(kg.protocol.MAXOUT_PROTOCOLS)
    mlp = kg.models.paper_network("mnist_pi", norm="l2", sigma=0.3)
    assert mlp.name == "mnist_maxout_mlp"
    assert mlp.regularizer == kg.GradientRegularizer(norm="l2", sigma=0.3)
    assert 0 < _largest_kernel_entry(mlp) <= 0.005
    assert _layers_of(mlp, kg.layers.ScaledDropout)[0].scale == 1.0

    cifar = kg.models.paper_network("cifar10", width=0.1)
    assert cifar.get_layer("conv_maxout_1").filters == 10  # 96 * 0.1
    max_norms = [cifar.get_layer(f"conv_maxout_{i}").max_norm for i in (1, 2, 3)]
    max_norms += [cifar.get_layer("maxout").max_norm]
    max_norms += [cifar.get_layer("softmax").kernel_constraint.max_value]
    assert max_norms == pytest.approx([0.9, 1.9365, 1.9365, 1.9, 1.9365])
    paddings = _layers_of(cifar, keras.layers.ZeroPadding2D)
    assert [layer.padding[0][0] for layer in paddings] == [4, 3, 3]
    (dropout,) = _layers_of(cifar, kg.layers.ScaledDropout)
    assert (dropout.rate, dropout.scale) == (0.2, 1.0)
    assert 0 < _largest_kernel_entry(cifar) <= 0.005

    glorot = kg.models.paper_network("mnist_pi", kernel_initializer="glorot_uniform")
    assert _largest_kernel_entry(glorot) > 0.01
    with pytest.raises(ValueError, match="Received: name='mnist'"):
        kg.models.paper_network("mnist")


@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda **r: kg.models.mnist_maxout_mlp(units=16, pieces=2, **r), (28, 28)),
        (lambda **r: kg.models.mnist_conv_maxout(**r), (28, 28, 1)),
        (lambda **r: kg.models.cifar10_conv_maxout(width=0.1, **r), (32, 32, 3)),
    ],
)
def test_networks_train_one_penalty_step(build, shape):
    model = build(norm="l2", sigma=0.5, input_range=(0.0, 1.0))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((8, *shape)).astype("float32")
    history = model.fit(x, rng.integers(0, 10, 8), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["grad_norm"][0] > 0
    assert model.predict(x, verbose=0).shape == (8, 10)
