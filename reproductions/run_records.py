"""The bookkeeping the reproduction scripts share, so that a run never
loses work: each finished result cached as JSON (`cached`), the settings
recorded beside the runs and a resume with other settings refused
(`refuse_mismatched_resume`), and positive arguments checked."""

from __future__ import annotations

import json
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
