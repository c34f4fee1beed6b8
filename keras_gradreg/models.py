"""`GradRegModel`, the paper's networks and PreActResNet-18."""

from keras_gradreg.src.maxout.networks import (
    MNIST_MAX_NORM,
    cifar10_conv_maxout,
    mnist_conv_maxout,
    mnist_maxout_mlp,
    paper_network,
)
from keras_gradreg.src.recipes.preact_resnet import preact_resnet18
from keras_gradreg.src.training.grad_reg_model import (
    FunctionalGradRegModel,
    GradRegModel,
)

__all__ = [
    "MNIST_MAX_NORM",
    "FunctionalGradRegModel",
    "GradRegModel",
    "cifar10_conv_maxout",
    "mnist_conv_maxout",
    "mnist_maxout_mlp",
    "paper_network",
    "preact_resnet18",
]
