"""`GradRegModel` and the paper's networks, built as GradRegModels."""

from keras_gradreg.models.grad_reg_model import FunctionalGradRegModel, GradRegModel
from keras_gradreg.models.networks import (
    cifar10_conv_maxout,
    mnist_conv_maxout,
    mnist_maxout_mlp,
    paper_network,
)

__all__ = [
    "FunctionalGradRegModel",
    "GradRegModel",
    "cifar10_conv_maxout",
    "mnist_conv_maxout",
    "mnist_maxout_mlp",
    "paper_network",
]
