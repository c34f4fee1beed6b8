"""Maxout layers (Goodfellow et al., 2013), the units of the paper's networks.

Grouping convention (both layers): the affine map produces `units * pieces`
features (or channels); unit `j` is the max over the **contiguous** block
`j * pieces ... (j + 1) * pieces - 1`. Equivalently, the features are
reshaped to `(..., units, pieces)` and reduced over the last axis.
"""

from __future__ import annotations

import keras
from keras import constraints, initializers, ops, regularizers

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer


def _kernel_constraint(kernel_constraint, max_norm, axis):
    if max_norm is None:
        return constraints.get(kernel_constraint)
    if kernel_constraint is not None:
        raise ValueError(
            "Pass either `max_norm` or `kernel_constraint`, not both. Received: "
            f"max_norm={max_norm!r}, kernel_constraint={kernel_constraint!r}"
        )
    if (
        isinstance(max_norm, bool)
        or not isinstance(max_norm, (int, float))
        or max_norm <= 0
    ):
        raise ValueError(
            f"Argument `max_norm` must be a number > 0 or None. Received: max_norm={max_norm!r}"
        )
    return constraints.MaxNorm(max_value=float(max_norm), axis=axis)


class _MaxoutBase(keras.layers.Layer):
    def __init__(
        self,
        pieces,
        *,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        activity_regularizer,
        kernel_constraint,
        bias_constraint,
        max_norm,
        max_norm_axis,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.pieces = check_integer("pieces", pieces)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.max_norm = max_norm
        self.kernel_constraint = _kernel_constraint(
            kernel_constraint, max_norm, max_norm_axis
        )
        self.bias_constraint = constraints.get(bias_constraint)

    def _add_kernel_and_bias(self, kernel_shape, outputs):
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(outputs,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def get_config(self):
        base_config = super().get_config()
        config = {
            "pieces": self.pieces,
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": None
            if self.max_norm is not None
            else constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "max_norm": self.max_norm,
        }
        return {**base_config, **config}


@keras_gradreg_export("keras_gradreg.layers.Maxout")
class Maxout(_MaxoutBase):
    """Dense maxout: `units * pieces` affine features, max over each unit's
    `pieces` contiguous features.

    `y_j = max_{k < pieces} (x W + b)_{j * pieces + k}`.

    Args:
        units: number of output units, >= 1.
        pieces: linear pieces per unit, >= 1 (`pieces=1` is a linear layer).
        use_bias: whether to add a bias.
        kernel_initializer: as in `keras.layers.Dense`.
        bias_initializer: as in `keras.layers.Dense`.
        kernel_regularizer: as in `keras.layers.Dense`.
        bias_regularizer: as in `keras.layers.Dense`.
        activity_regularizer: as in `keras.layers.Dense`.
        kernel_constraint: as in `keras.layers.Dense`.
        bias_constraint: as in `keras.layers.Dense`.
        max_norm: optional maximum L2 norm of each kernel column (the
            constraint of the maxout papers, e.g. 1.9365):
            `keras.constraints.MaxNorm(max_norm, axis=0)`. Exclusive with
            `kernel_constraint`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape: `(batch, ..., input_dim)`. Output shape: `(batch, ..., units)`.

    Examples:
        >>> import numpy as np
        >>> layer = Maxout(units=2, pieces=3)
        >>> tuple(layer(np.ones((4, 5), "float32")).shape)
        (4, 2)
    """

    def __init__(
        self,
        units,
        pieces,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        max_norm=None,
        **kwargs,
    ):
        super().__init__(
            pieces,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            max_norm=max_norm,
            max_norm_axis=0,
            **kwargs,
        )
        self.units = check_integer("units", units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "Maxout needs inputs of rank >= 2 with a known last dimension. "
                f"Received: input_shape={input_shape}"
            )
        outputs = self.units * self.pieces
        self._add_kernel_and_bias((input_shape[-1], outputs), outputs)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def call(self, inputs):
        z = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            z = z + self.bias
        grouped = ops.reshape(z, ops.shape(z)[:-1] + (self.units, self.pieces))
        return ops.max(grouped, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras_gradreg_export("keras_gradreg.layers.MaxoutConv2D")
class MaxoutConv2D(_MaxoutBase):
    """Convolutional maxout: a 2D convolution to `filters * pieces` channels,
    then the max over each filter's `pieces` contiguous channels.

    Args:
        filters: output channels, >= 1.
        pieces: linear pieces per output channel, >= 1.
        kernel_size: as in `keras.layers.Conv2D`.
        strides: as in `keras.layers.Conv2D`.
        padding: as in `keras.layers.Conv2D`.
        data_format: "channels_last" or "channels_first" (default: Keras's
            image data format).
        dilation_rate: as in `keras.layers.Conv2D`.
        max_norm: optional maximum L2 norm of each filter's kernel
            (`MaxNorm(max_norm, axis=[0, 1, 2])`).
        **kwargs: initializers, regularizers, constraints and base-layer
            arguments, as in `Maxout`.

    Examples:
        >>> import numpy as np
        >>> layer = MaxoutConv2D(filters=4, pieces=2, kernel_size=3)
        >>> tuple(layer(np.ones((1, 8, 8, 1), "float32")).shape)
        (1, 6, 6, 4)
    """

    def __init__(
        self,
        filters,
        pieces,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        max_norm=None,
        **kwargs,
    ):
        super().__init__(
            pieces,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            max_norm=max_norm,
            max_norm_axis=[0, 1, 2],
            **kwargs,
        )
        self.filters = check_integer("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.dilation_rate = _pair("dilation_rate", dilation_rate)
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(
                f"Argument `padding` must be 'valid' or 'same'. Received: padding={padding!r}"
            )
        self.padding = padding
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "Argument `data_format` must be 'channels_last' or "
                f"'channels_first'. Received: data_format={data_format!r}"
            )
        self.data_format = data_format
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[self._channel_axis] is None:
            raise ValueError(
                "MaxoutConv2D needs 4D inputs (batch, rows, cols, channels) or "
                "(batch, channels, rows, cols) with known channels. Received: "
                f"input_shape={input_shape}"
            )
        channels = input_shape[self._channel_axis]
        outputs = self.filters * self.pieces
        self._add_kernel_and_bias(self.kernel_size + (channels, outputs), outputs)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )

    def call(self, inputs):
        z = ops.conv(
            inputs,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.bias is not None:
            shape = (
                (1, 1, 1, -1) if self.data_format == "channels_last" else (1, -1, 1, 1)
            )
            z = z + ops.reshape(self.bias, shape)
        if self.data_format == "channels_last":
            grouped = ops.reshape(z, ops.shape(z)[:-1] + (self.filters, self.pieces))
            return ops.max(grouped, axis=-1)
        shape = ops.shape(z)
        grouped = ops.reshape(
            z, (shape[0], self.filters, self.pieces) + tuple(shape[2:])
        )
        return ops.max(grouped, axis=2)

    def compute_output_shape(self, input_shape):
        channels_last = self.data_format == "channels_last"
        spatial = input_shape[1:3] if channels_last else input_shape[2:4]
        sizes = []
        for n, k, s, d in zip(
            spatial, self.kernel_size, self.strides, self.dilation_rate
        ):
            if n is None:
                sizes.append(None)
            elif self.padding == "same":
                sizes.append(-(-n // s))
            else:  # "valid"
                sizes.append((n - d * (k - 1) - 1) // s + 1)
        if channels_last:
            return (input_shape[0], *sizes, self.filters)
        return (input_shape[0], self.filters, *sizes)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }
        return {**super().get_config(), **config}


def _pair(name, value):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(
            f"Argument `{name}` must be an integer >= 1 or a pair of them. "
            f"Received: {name}={value!r}"
        )
    return value
