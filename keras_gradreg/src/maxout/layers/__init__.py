"""Layers of the paper's networks: maxout units (dense and convolutional)
and dropout with a chosen scale on the kept units."""

from keras_gradreg.src.maxout.layers.maxout import Maxout, MaxoutConv2D
from keras_gradreg.src.maxout.layers.scaled_dropout import ScaledDropout

__all__ = ["Maxout", "MaxoutConv2D", "ScaledDropout"]
