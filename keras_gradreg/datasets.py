"""Dataset loaders (MNIST, Fashion-MNIST, CIFAR-10 from local files or
TensorFlow Datasets), the maxout papers' preprocessing, and augmented
training batches."""

from keras_gradreg.src.maxout.preprocessing import (
    ZCAWhitening,
    global_contrast_normalize,
)
from keras_gradreg.src.recipes.batches import AugmentedBatches
from keras_gradreg.src.tools.datasets import (
    CIFAR10_CLASSES,
    DATA_ENV,
    SOURCES,
    find_dataset_file,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    read_image_folder,
)

__all__ = [
    "AugmentedBatches",
    "CIFAR10_CLASSES",
    "DATA_ENV",
    "SOURCES",
    "ZCAWhitening",
    "find_dataset_file",
    "global_contrast_normalize",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "read_image_folder",
]
