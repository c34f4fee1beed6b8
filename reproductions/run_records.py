"""The bookkeeping the reproduction scripts share, so that a run never
loses work: each finished result cached as JSON (`cached`), a finished
training kept until its evaluation is recorded (`train_once`), the settings
recorded beside the runs and a resume with other settings refused
(`refuse_mismatched_resume`), and positive arguments checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from keras_gradreg.src.files import atomic_path, settings_changes


def cached(path: Path, compute):
    """Returns the JSON stored at `path`, or computes, stores and returns it:
    finished runs are never repeated when the script is restarted."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:  # a killed write leaves no half record
        partial.write_text(json.dumps(value, indent=2))
    return value


def train_once(model, folder: Path, fit) -> dict:
    """Trains `model` with `fit(model)` once: a run killed after training,
    while it is evaluated, reloads the trained weights instead of training
    again.

    `fit` resumes from a `BackupAndRestore(folder / "backup",
    delete_checkpoint=False)`; the backup is removed only once the trained
    weights are saved, so no moment of the run holds neither. A run that
    starts without a backup starts its `folder / "history.csv"` afresh, so
    that an appending `CSVLogger` never holds an earlier training's epochs.

    Args:
        model: the compiled model, built from the run's seed.
        folder: the run's folder; the trained weights go to
            `trained.weights.h5` and `fit`'s summary to `trained.json`.
        fit: trains `model` and returns a JSON-serializable summary
            (for example the median seconds per epoch).

    Returns:
        `fit`'s summary, stored or freshly computed.
    """
    weights, summary = folder / "trained.weights.h5", folder / "trained.json"
    if weights.exists() and summary.exists():
        model.load_weights(weights)
        return json.loads(summary.read_text())
    if not (folder / "backup").exists():
        (folder / "history.csv").unlink(missing_ok=True)
    value = fit(model)
    partial = folder / "trained.partial.weights.h5"  # Keras wants the suffix
    model.save_weights(partial)
    partial.replace(weights)
    with atomic_path(summary) as partial:
        partial.write_text(json.dumps(value))
    shutil.rmtree(folder / "backup", ignore_errors=True)
    return value


def check_settings(path: Path, settings: dict) -> str:
    """Records `settings` at `path`, or compares them with the recorded ones.

    Finished runs are cached by their regularizer only, so resuming into a
    folder made with other epochs, grids or data would silently mix results.

    Returns:
        "" when they match (or nothing was recorded yet), otherwise the
        differing settings as "name: recorded -> requested".
    """
    return ", ".join(
        f"{name}: {recorded!r} -> {requested!r}"
        for name, recorded, requested in settings_changes(path, settings)
    )


def refuse_non_positive(parser, args, *names) -> None:
    """Exits through `parser.error` when one of the named arguments (or an
    entry of a list-valued one) is given and not > 0."""
    for name in names:
        value = getattr(args, name)
        values = value if isinstance(value, list) else [value]
        if any(v is not None and v <= 0 for v in values):
            parser.error(f"--{name.replace('_', '-')} must be > 0. Received: {value}")


def refuse_mismatched_resume(parser, out: Path, settings: dict) -> None:
    """Exits through `parser.error` (code 2) when `out` holds runs made with
    other settings (see `check_settings`)."""
    mismatch = check_settings(out / "settings.json", settings)
    if mismatch:
        parser.error(
            f"--output {out} holds runs made with other settings ({mismatch}); "
            "resume with the same settings or choose another --output."
        )
