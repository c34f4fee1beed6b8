"""The maxout papers' CIFAR-10 preprocessing: global contrast
normalization against pylearn2's formula, and ZCA whitening."""

import numpy as np
import pytest

from keras_gradreg.src.maxout import preprocessing


def _pylearn2_gcn(x, scale, sqrt_bias, use_std):
    """pylearn2's `global_contrast_normalize`, written out on flat images."""
    x = x.reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    spread = x.var(axis=1, ddof=1) if use_std else (x**2).sum(axis=1)
    divisor = np.sqrt(sqrt_bias + spread) / scale
    divisor[divisor < 1e-8] = 1.0
    return x / divisor[:, None]


def test_global_contrast_normalization_is_pylearn2s():
    rng = np.random.default_rng(0)
    x = rng.random((6, 4, 4, 3)) * rng.random((6, 1, 1, 1)) * 255
    # The default is the maxout papers' CIFAR-10 (pylearn2's
    # CIFAR10(gcn=55.)): each image centered, its vector norm 55.
    out = preprocessing.global_contrast_normalize(x)
    assert out.shape == x.shape and out.dtype == np.float32
    flat = out.reshape(6, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 55.0, rtol=1e-5)
    np.testing.assert_allclose(flat, _pylearn2_gcn(x, 55.0, 0.0, False), rtol=1e-5)
    # Coates et al.'s: the standard deviation, with a bias under the root.
    coates = preprocessing.global_contrast_normalize(x, sqrt_bias=10.0, use_std=True)
    np.testing.assert_allclose(
        coates.reshape(6, -1), _pylearn2_gcn(x, 55.0, 10.0, True), rtol=1e-5
    )
    # NumPy scalars are numbers too.
    np.testing.assert_allclose(
        preprocessing.global_contrast_normalize(x, scale=np.float32(55.0)), out
    )
    constant = preprocessing.global_contrast_normalize(np.ones((1, 5)))
    assert np.all(np.isfinite(constant)) and np.all(constant == 0.0)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"scale": 0.0}, "scale=0.0"),
        ({"sqrt_bias": -1.0}, "sqrt_bias=-1.0"),
        ({"epsilon": "small"}, "epsilon='small'"),
        ({"scale": True}, "scale=True"),
    ],
)
def test_global_contrast_normalization_refuses_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        preprocessing.global_contrast_normalize(np.ones((2, 3)), **kwargs)


def test_zca_whitening_damps_directions_below_its_epsilon():
    """The default epsilon (pylearn2's filter bias 0.1) leaves the whitened
    covariance `U diag(s / (s + 0.1)) U^T`: high-variance directions near 1,
    low-variance ones (pixel noise) damped, not blown up."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3)) * [3.0, 1.0, 0.03]
    zca = preprocessing.ZCAWhitening().fit(x)
    assert zca.epsilon == 0.1
    white = zca.transform(x)
    s, u = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    np.testing.assert_allclose(
        np.cov(white, rowvar=False, bias=True),
        (u * (s / (s + 0.1))) @ u.T,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="epsilon=-0.1"):
        preprocessing.ZCAWhitening(epsilon=-0.1)


def test_zca_whitening_gives_identity_covariance_on_training_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 4, 2)) @ rng.normal(size=(2, 2))
    zca = preprocessing.ZCAWhitening(epsilon=0.0).fit(x)
    white = zca.transform(x).reshape(2000, -1)
    np.testing.assert_allclose(
        np.cov(white, rowvar=False, bias=True), np.eye(8), atol=1e-6
    )
    # ZCA is the symmetric whitening: the closest whitened data to the input.
    np.testing.assert_allclose(zca.matrix_, zca.matrix_.T, atol=1e-10)
    with pytest.raises(ValueError, match="before fit"):
        preprocessing.ZCAWhitening().transform(x)
