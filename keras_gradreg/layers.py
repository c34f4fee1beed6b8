"""The paper's layers: Maxout units, dense and convolutional, and the
maxout papers' dropout."""

from keras_gradreg.src.maxout.layers import Maxout, MaxoutConv2D, ScaledDropout

__all__ = ["Maxout", "MaxoutConv2D", "ScaledDropout"]
