"""The offline MNIST loader: lookup order, scaling, and the error offline."""

import os

import numpy as np
import pytest

from keras_gradreg import datasets


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
    with pytest.raises(FileNotFoundError, match="KERAS_GRADREG_DATA") as info:
        datasets.load_mnist(data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "mnist.npz") in str(info.value)
    assert "network is unreachable" in str(info.value)


@pytest.mark.skipif(
    not os.environ.get(datasets.DATA_ENV)
    or not os.path.exists(
        os.path.join(os.environ.get(datasets.DATA_ENV, ""), "mnist.npz")
    ),
    reason="the shared MNIST copy is not available",
)
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
