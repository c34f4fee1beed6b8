"""The offline MNIST loader: lookup order, scaling, and the error offline."""

import numpy as np
import pytest

from keras_gradreg import datasets
from tests.helpers import requires_mnist


def _write_fake_mnist(folder, value):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / "mnist.npz",
        x_train=np.full((3, 28, 28), value, "uint8"),
        y_train=np.array([1, 2, 3], "uint8"),
        x_test=np.full((2, 28, 28), value, "uint8"),
        y_test=np.array([4, 5], "uint8"),
    )


def test_lookup_order_argument_then_environment_then_keras_cache(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "arg", 255)
    _write_fake_mnist(tmp_path / "env", 51)
    _write_fake_mnist(tmp_path / "home" / ".keras" / "datasets", 102)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "env"))
    first = lambda **kw: datasets.load_mnist(**kw)[0][0][0, 0, 0]
    assert first(data_dir=tmp_path / "arg") == 1.0
    assert first() == pytest.approx(0.2)
    monkeypatch.delenv(datasets.DATA_ENV)
    assert first() == pytest.approx(0.4)


def test_arrays_are_float32_in_unit_range_and_int_labels(tmp_path):
    _write_fake_mnist(tmp_path, 255)
    (x, y), (xt, yt) = datasets.load_mnist(data_dir=tmp_path)
    assert x.dtype == np.float32 and x.shape == (3, 28, 28) and x.max() == 1.0
    assert y.dtype == np.int32 and list(yt) == [4, 5]


def test_offline_without_a_copy_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)

    def no_network():
        raise OSError("network is unreachable")

    monkeypatch.setattr("keras.datasets.mnist.load_data", no_network)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="KERAS_GRADREG_DATA") as info:
        datasets.load_mnist(data_dir=tmp_path / "empty")
    assert str(tmp_path / "empty" / "mnist.npz") in str(info.value)
    assert "network is unreachable" in str(info.value)


def test_an_explicit_data_dir_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    """Not a silent fall-back to $KERAS_GRADREG_DATA or a download."""
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_dir='.*nowhere'"):
        datasets.load_mnist(data_dir=tmp_path / "nowhere")


def test_a_corrupt_npz_is_named(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"truncated download")
    with pytest.raises(ValueError, match="mnist.npz is not a readable dataset file"):
        datasets.load_mnist(data_dir=tmp_path)


@requires_mnist
def test_real_mnist_from_the_shared_folder():
    (x, y), (xt, yt) = datasets.load_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(yt).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_validation_split_holds_out_the_last_training_images(tmp_path):
    _write_fake_mnist(tmp_path, 255)
    (x, y), (xv, yv), (xt, yt) = datasets.load_mnist(
        data_dir=tmp_path, validation_size=1
    )
    assert len(x) == 2 and list(y) == [1, 2] and list(yv) == [3] and len(xt) == 2
    with pytest.raises(ValueError, match="validation_size=3"):
        datasets.load_mnist(data_dir=tmp_path, validation_size=3)
    with pytest.raises(ValueError, match="validation_size=-1"):
        datasets.load_mnist(data_dir=tmp_path, validation_size=-1)
    with pytest.raises(ValueError, match="source='web'"):
        datasets.load_mnist(data_dir=tmp_path, source="web")


def test_fashion_mnist_reads_its_own_file(tmp_path):
    folder = tmp_path / "f"
    _write_fake_mnist(folder, 51)
    (folder / "mnist.npz").rename(folder / "fashion_mnist.npz")
    (x, _), _ = datasets.load_fashion_mnist(data_dir=folder)
    assert x[0, 0, 0] == pytest.approx(0.2)


def _write_image_folder(root, per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in datasets.CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")


def test_cifar10_reads_a_jpeg_image_folder_and_labels_its_source(tmp_path):
    _write_image_folder(tmp_path / "cifar10-jpeg")
    (x, y), (xt, yt), label = datasets.load_cifar10(
        data_dir=tmp_path, return_source=True
    )
    assert label == "CIFAR-10 (JPEG copy)"
    assert (
        x.shape == (20, 32, 32, 3)
        and x.dtype == np.float32
        and 0.0 <= x.min()
        and x.max() <= 1.0
    )
    # The folder is read class by class, then mixed by one fixed permutation:
    # every class present, the same order on every call.
    assert sorted(y.tolist()) == [c for c in range(10) for _ in range(2)]
    assert y.tolist() != sorted(y.tolist())
    again = datasets.load_cifar10(data_dir=tmp_path, validation_size=5)
    (x_a, y_a), (x_val, y_val), _ = again
    np.testing.assert_array_equal(np.concatenate([x_a, x_val]), x)
    assert len(set(y_val.tolist())) > 2  # not the last classes alone
    # The pairing of image and label survives the permutation.
    folder = datasets.read_image_folder(tmp_path / "cifar10-jpeg" / "train")
    for image, label in zip(x, y):
        matches = np.all(folder[0] == np.round(image * 255).astype(np.uint8), (1, 2, 3))
        assert folder[1][np.argmax(matches)] == label and matches.sum() == 1


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        (x, y), (xt, yt) = datasets.load_mnist(source="tfds")
    assert x.shape == (12, 28, 28) and x.dtype == np.float32 and x.max() <= 1.0
    assert y.dtype == np.int32 and set(y.tolist()) <= set(range(10))


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
    out = datasets.global_contrast_normalize(x)
    assert out.shape == x.shape and out.dtype == np.float32
    flat = out.reshape(6, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 55.0, rtol=1e-5)
    np.testing.assert_allclose(flat, _pylearn2_gcn(x, 55.0, 0.0, False), rtol=1e-5)
    # Coates et al.'s: the standard deviation, with a bias under the root.
    coates = datasets.global_contrast_normalize(x, sqrt_bias=10.0, use_std=True)
    np.testing.assert_allclose(
        coates.reshape(6, -1), _pylearn2_gcn(x, 55.0, 10.0, True), rtol=1e-5
    )
    # NumPy scalars are numbers too.
    np.testing.assert_allclose(
        datasets.global_contrast_normalize(x, scale=np.float32(55.0)), out
    )
    constant = datasets.global_contrast_normalize(np.ones((1, 5)))
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
        datasets.global_contrast_normalize(np.ones((2, 3)), **kwargs)


def test_zca_whitening_damps_directions_below_its_epsilon():
    """The default epsilon (pylearn2's filter bias 0.1) leaves the whitened
    covariance `U diag(s / (s + 0.1)) U^T`: high-variance directions near 1,
    low-variance ones (pixel noise) damped, not blown up."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3)) * [3.0, 1.0, 0.03]
    zca = datasets.ZCAWhitening().fit(x)
    assert zca.epsilon == 0.1
    white = zca.transform(x)
    s, u = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    np.testing.assert_allclose(
        np.cov(white, rowvar=False, bias=True),
        (u * (s / (s + 0.1))) @ u.T,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="epsilon=-0.1"):
        datasets.ZCAWhitening(epsilon=-0.1)


def test_zca_whitening_gives_identity_covariance_on_training_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 4, 2)) @ rng.normal(size=(2, 2))
    zca = datasets.ZCAWhitening(epsilon=0.0).fit(x)
    white = zca.transform(x).reshape(2000, -1)
    np.testing.assert_allclose(
        np.cov(white, rowvar=False, bias=True), np.eye(8), atol=1e-6
    )
    # ZCA is the symmetric whitening: the closest whitened data to the input.
    np.testing.assert_allclose(zca.matrix_, zca.matrix_.T, atol=1e-10)
    with pytest.raises(ValueError, match="before fit"):
        datasets.ZCAWhitening().transform(x)
