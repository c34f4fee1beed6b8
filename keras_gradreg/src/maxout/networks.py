"""The paper's networks, after the maxout paper's published configurations
(Goodfellow, Warde-Farley, Mirza, Courville, Bengio, 2013).

Each builder returns a `GradRegModel` and forwards regularizer arguments
(`norm`, `sigma`, `form`, `alpha`, ...), so
`mnist_maxout_mlp(norm="linf", sigma=0.1)` is one family member.
"""

from __future__ import annotations

import keras

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.maxout.layers import Maxout, MaxoutConv2D, ScaledDropout
from keras_gradreg.src.training.grad_reg_model import GradRegModel

MNIST_MAX_NORM = 1.9365
"""The max column norm of the maxout papers' MNIST networks (pylearn2's
`mnist_pi.yaml`)."""


@keras_gradreg_export("keras_gradreg.models.mnist_maxout_mlp")
def mnist_maxout_mlp(
    input_shape=(28, 28),
    num_classes: int = 10,
    units: int = 240,
    pieces: int = 5,
    input_dropout: float = 0.2,
    hidden_dropout: float = 0.5,
    max_norm: float | None = MNIST_MAX_NORM,
    kernel_initializer="glorot_uniform",
    input_dropout_scale: float | None = None,
    **regularizer,
) -> GradRegModel:
    """The permutation-invariant MNIST maxout MLP.

    Flatten -> dropout(0.2) -> Maxout(240 x 5) -> dropout(0.5) ->
    Maxout(240 x 5) -> dropout(0.5) -> softmax(10), every kernel column
    max-norm constrained to 1.9365 (dropout keep probabilities 0.8 and 0.5).

    Args:
        input_shape: shape of one image (flattened inside).
        num_classes: output classes.
        units: units of each maxout layer.
        pieces: pieces of each maxout unit.
        input_dropout: dropout *rate* on the input (1 - keep probability).
        hidden_dropout: dropout rate after each hidden layer.
        max_norm: column max-norm, or None for none.
        kernel_initializer: of every layer; the maxout papers draw
            uniformly from [-0.005, 0.005]
            (`keras.initializers.RandomUniform(-0.005, 0.005)`).
        input_dropout_scale: the factor on kept input pixels in training
            (`ScaledDropout`); None rescales by `1 / (1 - input_dropout)` as
            Keras's `Dropout` does, `1.0` dims them as pylearn2's
            `input_scales: 1` does.
        **regularizer: `GradRegModel` arguments (norm, sigma, form, ...).

    Returns:
        An uncompiled `GradRegModel` with softmax outputs.
    """
    inputs = keras.Input(input_shape, name="image")
    h = keras.layers.Flatten()(inputs)
    h = ScaledDropout(input_dropout, scale=input_dropout_scale)(h)
    for i in range(2):
        h = Maxout(
            units, pieces, max_norm=max_norm,
            kernel_initializer=_fresh(kernel_initializer),
            name=f"maxout_{i + 1}",
        )(h)  # fmt: skip
        h = keras.layers.Dropout(hidden_dropout)(h)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=_fresh(kernel_initializer),
        kernel_constraint=_max_norm(max_norm, axis=0),
        name="softmax",
    )(h)
    return GradRegModel(inputs, outputs, name="mnist_maxout_mlp", **regularizer)


@keras_gradreg_export("keras_gradreg.models.mnist_conv_maxout")
def mnist_conv_maxout(
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    dropout: float = 0.5,
    max_norm: float | None = MNIST_MAX_NORM,
    *,
    input_dropout: float = 0.0,
    input_dropout_scale: float | None = None,
    kernel_initializer="glorot_uniform",
    first_max_norm: float | None = None,
    paddings=None,
    **regularizer,
) -> GradRegModel:
    """The MNIST convolutional maxout network.

    Three MaxoutConv2D layers — 48 filters x 2 pieces (8x8), 48 x 2 (8x8),
    24 x 4 (5x5), each followed by max pooling (4x4 stride 2, 4x4 stride 2,
    2x2 stride 2) and dropout — then a softmax layer.

    With the defaults every convolution and pooling keeps the image size
    ("same" padding). pylearn2's `mnist.yaml`, the network of the paper's
    Table II, is `paddings=(0, 3, 3)` (zero padding before each "valid"
    convolution, "valid" pooling), `input_dropout=0.2,
    input_dropout_scale=1.0`, `first_max_norm=0.9` and
    `kernel_initializer=RandomUniform(-0.005, 0.005)`.

    Args:
        input_shape: `(28, 28, 1)`; a `(28, 28)` input is given a channel.
        num_classes: output classes.
        dropout: dropout rate after each convolutional block.
        max_norm: kernel max-norm, or None for none.
        input_dropout: dropout rate on the input image.
        input_dropout_scale: the factor on kept input pixels in training
            (see `mnist_maxout_mlp`); None rescales as Keras's `Dropout`.
        kernel_initializer: of every layer.
        first_max_norm: the first layer's kernel max-norm (default
            `max_norm`).
        paddings: None for "same" padding, or three non-negative integers:
            the zero padding on each side before each convolution, whose
            convolution and pooling are then "valid".
        **regularizer: `GradRegModel` arguments (norm, sigma, form, ...).

    Returns:
        An uncompiled `GradRegModel`.

    Raises:
        ValueError: if `paddings` is not None or three integers >= 0.
    """
    paddings = _check_paddings(paddings)
    inputs = keras.Input(input_shape, name="image")
    h = (
        inputs
        if len(input_shape) == 3
        else keras.layers.Reshape((*input_shape, 1))(inputs)
    )
    if input_dropout:
        h = ScaledDropout(input_dropout, scale=input_dropout_scale)(h)
    blocks = ((48, 2, 8, 4), (48, 2, 8, 4), (24, 4, 5, 2))
    norms = (first_max_norm or max_norm, max_norm, max_norm)
    h = _conv_blocks(h, blocks, norms, paddings, kernel_initializer, dropout)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=_fresh(kernel_initializer),
        kernel_constraint=_max_norm(max_norm, axis=0),
    )(keras.layers.Flatten()(h))
    return GradRegModel(inputs, outputs, name="mnist_conv_maxout", **regularizer)


@keras_gradreg_export("keras_gradreg.models.cifar10_conv_maxout")
def cifar10_conv_maxout(
    input_shape=(32, 32, 3),
    num_classes: int = 10,
    width: float = 1.0,
    dropout: float = 0.5,
    max_norm: float | None = None,
    *,
    input_dropout: float = 0.0,
    input_dropout_scale: float | None = None,
    kernel_initializer="glorot_uniform",
    max_norms=None,
    paddings=None,
    **regularizer,
) -> GradRegModel:
    """The CIFAR-10 convolutional maxout network.

    Three MaxoutConv2D layers of 96, 192 and 192 filters x 2 pieces (8x8,
    8x8, 5x5 kernels, each followed by max pooling and dropout), a dense
    Maxout layer of 500 units x 5 pieces, dropout and a softmax layer.
    `width` scales every layer (e.g. 0.25 for CPU runs). The layers are
    named `conv_maxout_1..3`, `maxout` and `softmax`.

    pylearn2's `cifar10_no_aug_valid.yaml`, the network of the paper's
    Table III, is `paddings=(4, 3, 3)`, `input_dropout=0.2,
    input_dropout_scale=1.0`, `max_norms=(0.9, 1.9365, 1.9365, 1.9,
    1.9365)` and `kernel_initializer=RandomUniform(-0.005, 0.005)` (train
    it with `MAXOUT_PROTOCOLS["cifar10"]`, whose optimizer scales the
    convolutions' learning rate by 0.05).

    Args:
        input_shape: one image, channels last.
        num_classes: output classes.
        width: multiplier of every layer's width, > 0.
        dropout: dropout rate after each convolutional block and the maxout
            layer.
        max_norm: kernel max-norm of every layer, or None for none.
        input_dropout: dropout rate on the input image.
        input_dropout_scale: the factor on kept input pixels in training
            (see `mnist_maxout_mlp`).
        kernel_initializer: of every layer.
        max_norms: five max-norms (three convolutions, the maxout layer,
            the softmax layer) instead of `max_norm`.
        paddings: None for "same" padding, or three integers >= 0: the zero
            padding before each "valid" convolution (and "valid" pooling).
        **regularizer: `GradRegModel` arguments (norm, sigma, form, ...).

    Returns:
        An uncompiled `GradRegModel`.

    Raises:
        ValueError: if `width` is not positive, `max_norms` is not five
            values or `paddings` not three integers >= 0.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(
            f"Argument `width` must be a number > 0. Received: width={width!r}"
        )
    if max_norms is None:
        max_norms = (max_norm,) * 5
    elif not isinstance(max_norms, (list, tuple)) or len(max_norms) != 5:
        raise ValueError(
            "Argument `max_norms` must be five max-norms (or None). "
            f"Received: max_norms={max_norms!r}"
        )
    paddings = _check_paddings(paddings)
    scale = lambda n: max(1, round(n * width))  # noqa: E731
    inputs = keras.Input(input_shape, name="image")
    h = inputs
    if input_dropout:
        h = ScaledDropout(input_dropout, scale=input_dropout_scale)(h)
    blocks = [(scale(f), 2, kernel, pool) for f, kernel, pool in CIFAR10_BLOCKS]
    h = _conv_blocks(h, blocks, max_norms[:3], paddings, kernel_initializer, dropout)
    h = Maxout(
        scale(500), 5, max_norm=max_norms[3],
        kernel_initializer=_fresh(kernel_initializer), name="maxout",
    )(keras.layers.Flatten()(h))  # fmt: skip
    h = keras.layers.Dropout(dropout)(h)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=_fresh(kernel_initializer),
        kernel_constraint=_max_norm(max_norms[4], axis=0),
        name="softmax",
    )(h)
    return GradRegModel(inputs, outputs, name="cifar10_conv_maxout", **regularizer)


#: (filters, kernel, pool) of the CIFAR-10 network's convolutional blocks.
CIFAR10_BLOCKS = ((96, 8, 4), (192, 8, 4), (192, 5, 2))


#: pylearn2's arguments of each network of the maxout papers, by the
#: names of `protocol.MAXOUT_PROTOCOLS` (`paper_network`).
_PAPER_NETWORKS = {
    # mnist_pi.yaml
    "mnist_pi": (mnist_maxout_mlp, {"input_dropout_scale": 1.0}),
    # mnist.yaml
    "mnist_conv": (
        mnist_conv_maxout,
        {
            "input_shape": (28, 28),
            "input_dropout": 0.2,
            "input_dropout_scale": 1.0,
            "first_max_norm": 0.9,
            "paddings": (0, 3, 3),
        },
    ),
    # cifar10_no_aug_valid.yaml
    "cifar10": (
        cifar10_conv_maxout,
        {
            "input_dropout": 0.2,
            "input_dropout_scale": 1.0,
            "max_norms": (0.9, MNIST_MAX_NORM, MNIST_MAX_NORM, 1.9, MNIST_MAX_NORM),
            "paddings": (4, 3, 3),
        },
    ),
}


@keras_gradreg_export("keras_gradreg.models.paper_network")
def paper_network(name: str, **kwargs) -> GradRegModel:
    """One of the maxout papers' networks as pylearn2 builds it.

    `name` is the key of its training settings in
    `protocol.MAXOUT_PROTOCOLS`:

    - "mnist_pi" (`mnist_pi.yaml`, the paper's Table I): `mnist_maxout_mlp`
      with `input_dropout_scale=1.0`;
    - "mnist_conv" (`mnist.yaml`, Table II): `mnist_conv_maxout` on
      `(28, 28)` images with `input_dropout=0.2, input_dropout_scale=1.0,
      first_max_norm=0.9, paddings=(0, 3, 3)`;
    - "cifar10" (`cifar10_no_aug_valid.yaml`, Table III):
      `cifar10_conv_maxout` with `input_dropout=0.2,
      input_dropout_scale=1.0, max_norms=(0.9, 1.9365, 1.9365, 1.9,
      1.9365), paddings=(4, 3, 3)`;

    each with `kernel_initializer=RandomUniform(-0.005, 0.005)`.

    Args:
        name: "mnist_pi", "mnist_conv" or "cifar10".
        **kwargs: arguments of the builder, replacing pylearn2's (e.g.
            `width=0.25` or another `kernel_initializer`), and
            `GradRegModel` arguments (norm, sigma, form, input_range, ...).

    Returns:
        An uncompiled `GradRegModel`.

    Raises:
        ValueError: if `name` is not one of the three.

    Example:
        >>> model = paper_network("mnist_pi", norm="l2", sigma=0.3)
        >>> model.regularizer.norm, model.get_layer("maxout_1").units
        ('l2', 240)
    """
    if name not in _PAPER_NETWORKS:
        raise ValueError(
            f"Argument `name` must be one of {sorted(_PAPER_NETWORKS)}. "
            f"Received: name={name!r}"
        )
    builder, arguments = _PAPER_NETWORKS[name]
    initializer = keras.initializers.RandomUniform(-0.005, 0.005)
    return builder(**{"kernel_initializer": initializer, **arguments, **kwargs})


def _check_paddings(paddings):
    if paddings is None:
        return None
    paddings = tuple(paddings) if isinstance(paddings, (list, tuple)) else paddings
    valid = isinstance(paddings, tuple) and len(paddings) == 3
    valid = valid and all(
        isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in paddings
    )
    if not valid:
        raise ValueError(
            "Argument `paddings` must be None or three integers >= 0. "
            f"Received: paddings={paddings!r}"
        )
    return paddings


def _conv_blocks(h, blocks, max_norms, paddings, kernel_initializer, dropout):
    """Three convolutional maxout blocks, each a MaxoutConv2D (named
    `conv_maxout_<i>`), max pooling of stride 2 and dropout: with
    `paddings`, zero padding before a "valid" convolution and "valid"
    pooling (pylearn2's `pad`); without, "same" everywhere.

    `blocks` holds (filters, pieces, kernel, pool) per block."""
    for i, (filters, pieces, kernel, pool) in enumerate(blocks):
        padding = "same"
        if paddings is not None:
            padding = "valid"
            if paddings[i]:
                h = keras.layers.ZeroPadding2D(paddings[i])(h)
        h = MaxoutConv2D(
            filters, pieces, kernel, padding=padding, max_norm=max_norms[i],
            kernel_initializer=_fresh(kernel_initializer), name=f"conv_maxout_{i + 1}",
        )(h)  # fmt: skip
        h = keras.layers.MaxPooling2D(pool, strides=2, padding=padding)(h)
        h = keras.layers.Dropout(dropout)(h)
    return h


def _fresh(initializer):
    """A new initializer instance per layer: one unseeded instance reused
    across layers would draw the same values for each."""
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def _max_norm(value, axis):
    return None if value is None else keras.constraints.MaxNorm(value, axis=axis)
