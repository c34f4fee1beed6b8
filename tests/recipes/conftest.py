"""The recipe tests' PreActResNets are 2 to 4 channels wide. On the torch
backend, torch 2.13's oneDNN convolution weight-gradient kernel corrupts the
heap for such narrow convolutions under one intra-op thread ("double free or
corruption", or SIGABRT in `mkldnn_convolution_backward_weights`), so these
tests run torch's own convolution kernels instead."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _torch_without_onednn():
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    with torch.backends.mkldnn.flags(enabled=False):
        yield
