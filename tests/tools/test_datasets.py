"""The offline MNIST loader: lookup order, scaling, and the error offline."""

import numpy as np
import pytest

from keras_gradreg.src.tools import datasets
from tests.helpers import requires_mnist, write_image_folder


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


def test_cifar10_reads_a_jpeg_image_folder_and_labels_its_source(tmp_path):
    write_image_folder(tmp_path / "cifar10-jpeg")
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
