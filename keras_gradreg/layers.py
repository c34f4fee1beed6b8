"""The paper's layers: Maxout units, dense and convolutional, and the
maxout papers' dropout; and the CIFAR-10 recipe's augmentation."""

from keras_gradreg.src.maxout.layers import Maxout, MaxoutConv2D, ScaledDropout
from keras_gradreg.src.recipes.augmentation import PadCropFlip

__all__ = ["Maxout", "MaxoutConv2D", "PadCropFlip", "ScaledDropout"]
