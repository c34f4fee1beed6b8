"""What `train` and `evaluate` share: the data, the output folder and
what goes into their JSON files."""

from __future__ import annotations

import platform
from pathlib import Path


def refuse_given(options: dict, applies_to: str, received: str) -> None:
    """Refuses options given on the command line where they do nothing.

    Args:
        options: flag -> parsed value, None when the flag was not given.
        applies_to: where the flags apply, e.g. "--form multistep".
        received: what the command line has instead, e.g. "--form penalty".

    Raises:
        ValueError: naming the first flag given and its value.
    """
    for flag, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            shown = ""
        elif isinstance(value, (list, tuple)):
            shown = " " + " ".join(f"{v:g}" for v in value)
        else:
            shown = f" {value:g}" if isinstance(value, float) else f" {value}"
        raise ValueError(
            f"{flag} applies to {applies_to} only. Received: {flag}{shown} "
            f"with {received}"
        )


def load(args):
    from keras_gradreg.src.tools import datasets

    loader = {
        "mnist": datasets.load_mnist,
        "fashion_mnist": datasets.load_fashion_mnist,
        "cifar10": datasets.load_cifar10,
    }[args.dataset]
    kwargs = {"validation_size": args.validation_size}
    if args.dataset == "cifar10":
        *splits, label = loader(args.data_dir, return_source=True, **kwargs)
    else:
        splits, label = (
            loader(args.data_dir, **kwargs),
            {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[args.dataset],
        )
    if args.limit:
        splits = [(x[: args.limit], y[: args.limit]) for x, y in splits]
    return splits, label


def output_folder(path) -> Path:
    """`--output` as a folder (created), refusing an existing file."""
    output = Path(path)
    if output.exists() and not output.is_dir():
        raise ValueError(
            f"--output must name a folder; {output} is an existing file. "
            f"Received: --output {path}"
        )
    return output


def versions():
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in (
        "keras",
        "keras-gradreg",
        "numpy",
        "tensorflow-cpu",
        "tensorflow",
        "jax",
        "torch",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
