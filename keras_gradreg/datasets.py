"""Dataset loaders that work offline from a local folder.

Lookup order for a dataset file: the `data_dir` argument, then the folder in
`$KERAS_GRADREG_DATA`, then Keras's cache `~/.keras/datasets`, then Keras's
own download. Without network access and without a local copy, the error
says where to put the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from keras_gradreg.api_export import keras_gradreg_export

DATA_ENV = "KERAS_GRADREG_DATA"


def _candidates(filename: str, data_dir: Optional[str]):
    if data_dir is not None:
        yield Path(data_dir) / filename
    if os.environ.get(DATA_ENV):
        yield Path(os.environ[DATA_ENV]) / filename
    yield Path(os.path.expanduser("~")) / ".keras" / "datasets" / filename


def find_dataset_file(filename: str, data_dir: Optional[str] = None) -> Optional[Path]:
    """The first existing `filename` in the lookup order, or None."""
    return next((p for p in _candidates(filename, data_dir) if p.is_file()), None)


def _download_error(filename, data_dir, error):
    searched = "\n  ".join(str(p) for p in _candidates(filename, data_dir))
    return FileNotFoundError(
        f"Could not find {filename} locally and the download failed "
        f"({type(error).__name__}: {error}). Put {filename} (Keras's array "
        f"layout) in one of:\n  {searched}\nor set ${DATA_ENV} to the folder "
        "that holds it."
    )


def _mnist_like(filename, keras_loader, data_dir):
    path = find_dataset_file(filename, data_dir)
    if path is not None:
        with np.load(path) as data:
            arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        try:
            (xa, ya), (xb, yb) = keras_loader()
        except Exception as error:  # network errors come in many types
            raise _download_error(filename, data_dir, error) from error
        arrays = [xa, ya, xb, yb]
    x_train, y_train, x_test, y_test = arrays
    scale = lambda x: x.astype("float32") / 255.0  # noqa: E731
    return (scale(x_train), y_train.astype("int32")), (
        scale(x_test),
        y_test.astype("int32"),
    )


@keras_gradreg_export("keras_gradreg.datasets.load_mnist")
def load_mnist(data_dir: Optional[str] = None):
    """Loads MNIST as float32 images in [0, 1] and int32 labels.

    Args:
        data_dir: a folder holding `mnist.npz`; see the module docstring for
            the lookup order.

    Returns:
        `((x_train, y_train), (x_test, y_test))` with images of shape
        (N, 28, 28).

    Raises:
        FileNotFoundError: if no local copy exists and the download fails.
    """
    import keras

    return _mnist_like("mnist.npz", keras.datasets.mnist.load_data, data_dir)
