"""The CIFAR-10 recipe the fast adversarial-training papers benchmark on:
PreActResNet-18, pad-crop-flip augmentation, the cyclic learning rate,
weight averaging and mixed precision."""
