"""Files written so that a process killed mid-write loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a partial path beside `path` to write to, then renames it over
    `path`: a process killed while writing leaves the old file (or none),
    never half a new one. On an error the partial file is removed and the
    error raised.

    The partial path keeps `path`'s suffix (`best.partial.keras`), so
    writers that add or check a suffix (`np.savez`, `Model.save`) accept it.

    Args:
        path: the file to write, a `str` or `Path`.

    Yields:
        The partial path, of `path`'s type.

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.json"
        >>> with atomic_path(path) as partial:
        ...     _ = partial.write_text("{}")
        >>> path.read_text(), partial.exists()
        ('{}', False)
    """
    full = Path(path)
    partial = full.with_name(f"{full.stem}.partial{full.suffix}")
    try:
        yield partial if isinstance(path, Path) else str(partial)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    os.replace(partial, full)


def settings_changes(path, settings: dict) -> list:
    """Records `settings` as JSON at `path`, or compares them with the
    settings recorded there, so that a resume with other settings can be
    refused rather than mixing runs.

    Args:
        path: the settings file, a `str` or `Path`.
        settings: name -> a JSON-serializable value (tuples compare as lists).

    Returns:
        `(name, recorded, requested)` for each setting that differs from the
        recorded one; `[]` when they match or nothing was recorded yet.
    """
    path = Path(path)
    settings = json.loads(json.dumps(settings))  # tuples as JSON lists
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial:
            partial.write_text(json.dumps(settings, indent=2))
        return []
    recorded = json.loads(path.read_text())
    return [
        (name, recorded.get(name), value)
        for name, value in settings.items()
        if recorded.get(name) != value
    ]
