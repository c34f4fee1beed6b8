"""Dataset loaders that work offline from a local folder.

Every loader returns float32 images in [0, 1] and int32 labels:
`((x_train, y_train), (x_test, y_test))`, or with `validation_size=n`
`((x_train, y_train), (x_val, y_val), (x_test, y_test))` where the
validation set is the *last* n training images (the paper's MNIST split uses
n = 10,000).

Lookup order for a dataset file or folder: the `data_dir` argument, then the
folder in `$KERAS_GRADREG_DATA`, then Keras's cache `~/.keras/datasets`,
then Keras's own download. Without network access and without a local copy,
the error says where to put the data. `source="tfds"` reads through
tensorflow-datasets instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export
from keras_gradreg.src.checks import check_integer

DATA_ENV = "KERAS_GRADREG_DATA"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SOURCES = ("auto", "tfds")


def _search_folders(data_dir):
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            # An explicit folder that is not there is a typo, not a cue to
            # fall back to $KERAS_GRADREG_DATA or a download.
            raise FileNotFoundError(
                f"Argument `data_dir` must be an existing folder. Received: "
                f"data_dir={str(data_dir)!r}"
            )
        yield Path(data_dir)
    if os.environ.get(DATA_ENV):
        yield Path(os.environ[DATA_ENV])
    yield Path(os.path.expanduser("~")) / ".keras" / "datasets"


def find_dataset_file(name: str, data_dir: Optional[str] = None) -> Optional[Path]:
    """The first existing `name` (file or folder) in the lookup order, or
    None."""
    return next(
        (
            folder / name
            for folder in _search_folders(data_dir)
            if (folder / name).exists()
        ),
        None,
    )


def _download_error(name, data_dir, error, layout):
    searched = "\n  ".join(str(folder / name) for folder in _search_folders(data_dir))
    return FileNotFoundError(
        f"Could not find {name} locally and the download failed "
        f"({type(error).__name__}: {error}). Put {name} ({layout}) in one of:\n"
        f"  {searched}\nor set ${DATA_ENV} to the folder that holds it."
    )


def _check_arguments(validation_size, source):
    if source not in SOURCES:
        raise ValueError(
            f"Argument `source` must be one of {SOURCES}. Received: source={source!r}"
        )
    check_integer("validation_size", validation_size, minimum=0)


def _finish(x_train, y_train, x_test, y_test, validation_size):
    scale = lambda x: x.astype("float32") / 255.0  # noqa: E731
    train = (scale(x_train), np.asarray(y_train).astype("int32").reshape(-1))
    test = (scale(x_test), np.asarray(y_test).astype("int32").reshape(-1))
    if not validation_size:
        return train, test
    if validation_size >= len(train[0]):
        raise ValueError(
            f"Argument `validation_size` must be smaller than the {len(train[0])} "
            f"training images. Received: validation_size={validation_size}"
        )
    cut = len(train[0]) - validation_size
    return (train[0][:cut], train[1][:cut]), (train[0][cut:], train[1][cut:]), test


def _from_tfds(name, data_dir):
    import tensorflow_datasets as tfds

    arrays = []
    for split in ("train", "test"):
        # Example by example: `batch_size=-1` and large batches abort inside
        # TF 2.21 on tfds's mock data.
        dataset = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)
        images, labels = zip(*tfds.as_numpy(dataset))
        arrays += [np.stack(images), np.asarray(labels)]
    return arrays


def _read_npz(path):
    """The four arrays of a Keras-layout `.npz`, or a clear error naming the
    file when it is not one (truncated download, other layout)."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise ValueError(f"it lacks the arrays {missing}")
            return [data[k] for k in keys]
    except Exception as error:  # zipfile, pickle and OS errors alike
        raise ValueError(
            f"{path} is not a readable dataset file in Keras's layout "
            f"({keys}): {error}. Delete or replace it."
        ) from error


def _mnist_like(filename, tfds_name, keras_loader, data_dir, validation_size, source):
    _check_arguments(validation_size, source)
    if source == "tfds":
        x_train, y_train, x_test, y_test = _from_tfds(tfds_name, data_dir)
        x_train, x_test = (
            x_train[..., 0],
            x_test[..., 0],
        )  # (N, 28, 28, 1) -> (N, 28, 28)
        return _finish(x_train, y_train, x_test, y_test, validation_size)
    path = find_dataset_file(filename, data_dir)
    if path is not None:
        arrays = _read_npz(path)
    else:
        try:
            (xa, ya), (xb, yb) = keras_loader()
        except Exception as error:  # network errors come in many types
            raise _download_error(
                filename, data_dir, error, "Keras's array layout"
            ) from error
        arrays = [xa, ya, xb, yb]
    return _finish(*arrays, validation_size)


@keras_gradreg_export("keras_gradreg.datasets.load_mnist")
def load_mnist(
    data_dir: Optional[str] = None, *, validation_size: int = 0, source: str = "auto"
):
    """Loads MNIST: 28x28 float32 images in [0, 1] and int32 labels.

    Args:
        data_dir: a folder holding `mnist.npz` (Keras's layout); see the
            module docstring for the lookup order. With `source="tfds"`, the
            tensorflow-datasets data folder.
        validation_size: hold out the last n training images (10,000 for the
            paper's split); 0 for none.
        source: "auto" (local file, else Keras download) or "tfds".

    Returns:
        `((x_train, y_train), (x_test, y_test))`, or with a validation set
        `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.

    Raises:
        FileNotFoundError: if no local copy exists and the download fails.
        ValueError: for a bad `validation_size` or `source`.
    """
    import keras

    return _mnist_like(
        "mnist.npz",
        "mnist",
        keras.datasets.mnist.load_data,
        data_dir,
        validation_size,
        source,
    )


@keras_gradreg_export("keras_gradreg.datasets.load_fashion_mnist")
def load_fashion_mnist(
    data_dir: Optional[str] = None, *, validation_size: int = 0, source: str = "auto"
):
    """Loads Fashion-MNIST from `fashion_mnist.npz` (Keras's array layout);
    otherwise as `load_mnist`."""
    import keras

    return _mnist_like(
        "fashion_mnist.npz",
        "fashion_mnist",
        keras.datasets.fashion_mnist.load_data,
        data_dir,
        validation_size,
        source,
    )


def read_image_folder(folder, classes=CIFAR10_CLASSES):
    """Reads `folder/<class>/*.jpg|png` into uint8 arrays (N, H, W, C) and
    labels (the index of the class name in `classes`).

    Files are read in sorted order within each class, classes in the given
    order.

    Raises:
        FileNotFoundError: if a class folder is missing or empty.
    """
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (Path(folder) / name).glob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not files:
            raise FileNotFoundError(
                f"No images in {Path(folder) / name}: expected <class>/*.jpg folders."
            )
        for file in files:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB"), dtype="uint8"))
        labels.extend([label] * len(files))
    return np.stack(images), np.asarray(labels, dtype="int32")


def _mixed(x, y, seed: int = 0):
    """`(x, y)` in one fixed random order (the same on every machine)."""
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


@keras_gradreg_export("keras_gradreg.datasets.load_cifar10")
def load_cifar10(
    data_dir: Optional[str] = None,
    *,
    validation_size: int = 0,
    source: str = "auto",
    return_source: bool = False,
):
    """Loads CIFAR-10: 32x32x3 float32 images in [0, 1] and int32 labels.

    Looks for a `cifar10-jpeg/{train,test}/<class>/*.jpg` image folder in the
    lookup order (a JPEG re-encoding of CIFAR-10: report results on it as
    "CIFAR-10 (JPEG copy)", since its pixels differ slightly from the real
    arrays; its images come in one fixed random order per split, so that a
    validation split or a prefix holds every class), and otherwise uses
    `keras.datasets.cifar10.load_data()` (Keras's cache or a download),
    which gives the real arrays.

    Args:
        data_dir: as in `load_mnist`.
        validation_size: as in `load_mnist`.
        source: as in `load_mnist`.
        return_source: also return a label for reports: "CIFAR-10 (JPEG
            copy)", "CIFAR-10" or "CIFAR-10 (tfds)".

    Returns:
        The splits as in `load_mnist`, then the label if `return_source`.
    """
    import keras

    _check_arguments(validation_size, source)
    if source == "tfds":
        arrays, label = _from_tfds("cifar10", data_dir), "CIFAR-10 (tfds)"
    else:
        folder = find_dataset_file("cifar10-jpeg", data_dir)
        if folder is not None:
            # The folder holds one class after another; a split or a prefix
            # of it would hold only some classes (with validation_size=10000,
            # ships and trucks alone, and none of them in training). One
            # fixed permutation per split mixes them, as the real arrays are.
            arrays = (
                *_mixed(*read_image_folder(folder / "train")),
                *_mixed(*read_image_folder(folder / "test")),
            )
            label = "CIFAR-10 (JPEG copy)"
        else:
            try:
                (xa, ya), (xb, yb) = keras.datasets.cifar10.load_data()
            except Exception as error:
                raise _download_error(
                    "cifar10-jpeg",
                    data_dir,
                    error,
                    "train/ and test/ folders of <class>/*.jpg",
                ) from error
            arrays, label = (xa, ya, xb, yb), "CIFAR-10"
    splits = _finish(*arrays, validation_size)
    return (*splits, label) if return_source else splits
