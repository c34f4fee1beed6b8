"""Files written so that a process killed mid-write loses nothing."""

from __future__ import annotations

import contextlib
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
