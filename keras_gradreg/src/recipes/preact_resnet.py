"""PreActResNet-18, the network of the fast adversarial-training papers on
CIFAR-10 (He, Zhang, Ren & Sun, 2016's pre-activation ResNet as Wong, Rice
& Kolter, 2020 and Andriushchenko & Flammarion, 2020 train it)."""

from __future__ import annotations

import keras

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer, check_number
from keras_gradreg.src.training.grad_reg_model import GradRegModel

#: Per-channel mean and standard deviation of CIFAR-10's training images,
#: as Wong et al.'s code normalizes them.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

#: Blocks per stage of the 18-layer network.
BLOCKS = (2, 2, 2, 2)


@keras_gradreg_export("keras_gradreg.models.preact_resnet18")
def preact_resnet18(
    input_shape=(32, 32, 3),
    num_classes: int = 10,
    width: int = 64,
    *,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    weight_decay: float = 0.0,
    kernel_initializer="he_normal",
    **regularizer,
) -> GradRegModel:
    """PreActResNet-18 on images in [0, 1].

    A 3x3 convolution of `width` filters, then four stages of two
    pre-activation blocks with `width`, `2 width`, `4 width` and `8 width`
    filters (64-128-256-512 by default; the last three stages halve the
    image with a stride of 2), then batch normalization, ReLU, global
    average pooling and a dense softmax layer. Each block computes
    `BN-ReLU-conv3x3-BN-ReLU-conv3x3` and adds its input, or a 1x1
    convolution of its activated input where the shape changes. This is
    the network of Wong et al.'s and RobustBench's `PreActResNet18`
    (11,172,170 trainable weights for CIFAR-10): convolutions without
    biases, batch normalization with PyTorch's momentum 0.1 and epsilon
    1e-5, and a stride-2 convolution padded by one pixel on every side,
    as PyTorch's `padding=1` (Keras's "same" would pad only the bottom
    and right).

    The inputs are normalized inside the network (`(x - mean) / std`,
    CIFAR-10's statistics by default), so that the perturbations and
    `input_range=(0, 1)` live in pixel space, where the threat model is
    stated. Under a mixed dtype policy the softmax layer computes in
    float32.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: output classes, >= 2.
        width: filters of the first stage, >= 1 (64 in the papers; 8 or
            16 makes a network that trains on a CPU).
        mean: per-channel means to subtract, or None (with `std`) for no
            normalization, as Andriushchenko & Flammarion's code.
        std: per-channel standard deviations to divide by, or None.
        weight_decay: PyTorch's SGD `weight_decay` `w`: `w * theta` is
            added to the gradient of every weight (kernels, the dense bias
            and batch normalization's scales and offsets), here as the
            regularization loss `(w / 2) ||theta||^2`, >= 0. Keras's
            optimizers' `weight_decay` is decoupled from the gradient,
            which with momentum is a different (weaker) decay.
        kernel_initializer: of the convolutions and the dense layer.
        **regularizer: `GradRegModel` arguments (norm, sigma, form,
            alpha, input_range, ...).

    Returns:
        An uncompiled `GradRegModel` with softmax outputs.

    Raises:
        ValueError: naming the argument and the value received, for an
            `input_shape` that is not three integers >= 1, `num_classes`
            < 2, `width` < 1, a negative `weight_decay`, or `mean`/`std`
            that are not one positive number per channel.

    Examples:
        >>> model = preact_resnet18(width=4, norm="linf", sigma=8 / 255)
        >>> model.output_shape
        (None, 10)
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = check_integer("num_classes", num_classes, minimum=2)
    width = check_integer("width", width)
    weight_decay = check_number("weight_decay", weight_decay, finite=True)
    normalization = _check_normalization(mean, std, input_shape[-1])
    l2 = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    layers = _Layers(kernel_initializer, l2)

    inputs = keras.Input(input_shape, name="image")
    h = inputs
    if normalization is not None:
        mean, variance = normalization
        h = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")(
            h
        )
    h = layers.conv(h, width, 3, 1, "stem_conv")
    channels = width
    for stage, blocks in enumerate(BLOCKS):
        filters = width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"stage{stage + 1}_block{block + 1}"
            h = _block(layers, h, channels, filters, stride, name)
            channels = filters
    h = layers.activation(h, "final")
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=layers.initializer(),
        kernel_regularizer=l2,
        bias_regularizer=l2,
        dtype="float32" if mixed else None,
        name="softmax",
    )(h)
    return GradRegModel(inputs, outputs, name="preact_resnet18", **regularizer)


def _block(layers, h, channels, filters, stride, name):
    """One pre-activation block: the shortcut is the input itself, or a
    1x1 convolution of the activated input where the shape changes."""
    activated = layers.activation(h, f"{name}_preact")
    shortcut = h
    if stride != 1 or channels != filters:
        shortcut = layers.conv(activated, filters, 1, stride, f"{name}_shortcut")
    out = layers.conv(activated, filters, 3, stride, f"{name}_conv1")
    out = layers.activation(out, f"{name}_mid")
    out = layers.conv(out, filters, 3, 1, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


class _Layers:
    """The network's convolutions and BN-ReLU pairs, each with the same
    initializer and weight decay."""

    def __init__(self, kernel_initializer, l2):
        self.kernel_initializer = kernel_initializer
        self.l2 = l2

    def initializer(self):
        # One instance per layer: an unseeded instance reused across layers
        # would draw the same values for each.
        initializer = keras.initializers.get(self.kernel_initializer)
        return initializer.__class__.from_config(initializer.get_config())

    def conv(self, h, filters, kernel, stride, name):
        padding = "same"
        if stride > 1 and kernel > 1:  # PyTorch's symmetric padding
            h = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(h)
            padding = "valid"
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=self.initializer(),
            kernel_regularizer=self.l2,
            name=name,
        )(h)

    def activation(self, h, name):
        h = keras.layers.BatchNormalization(
            momentum=0.9,
            epsilon=1e-5,
            gamma_regularizer=self.l2,
            beta_regularizer=self.l2,
            name=f"{name}_bn",
        )(h)
        return keras.layers.ReLU(name=f"{name}_relu")(h)


def _check_input_shape(input_shape):
    valid = isinstance(input_shape, (list, tuple)) and len(input_shape) == 3
    valid = valid and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in input_shape
    )
    if not valid:
        raise ValueError(
            "Argument `input_shape` must be (height, width, channels), three "
            f"integers >= 1. Received: input_shape={input_shape!r}"
        )
    return tuple(input_shape)


def _check_normalization(mean, std, channels):
    """`(mean, variance)` as lists, or None when both are None."""
    if mean is None and std is None:
        return None
    for name, value, low in (("mean", mean, None), ("std", std, 0.0)):
        valid = isinstance(value, (list, tuple)) and len(value) == channels
        if valid:
            try:
                [check_number(name, v, low, exclusive=True, finite=True) for v in value]
            except ValueError:
                valid = False
        if not valid:
            kind = "positive numbers" if low is not None else "finite numbers"
            raise ValueError(
                f"Argument `{name}` must be {channels} {kind}, one per channel "
                f"(or `mean=None, std=None` for no normalization). Received: "
                f"{name}={value!r}"
            )
    return [float(m) for m in mean], [float(s) ** 2 for s in std]
