"""The CIFAR-10 recipe of the fast adversarial-training papers:
PreActResNet-18, pad-crop-flip augmentation, the cyclic learning rate,
weight averaging and mixed precision around a member of the family."""

from keras_gradreg.src.recipes.cifar10 import (
    CIFAR10_RECIPES,
    MIXED_PRECISION,
    CIFAR10Recipe,
    cifar10_recipe,
)

__all__ = ["CIFAR10_RECIPES", "MIXED_PRECISION", "CIFAR10Recipe", "cifar10_recipe"]
