import os

import pytest

from keras_gradreg.src.files import atomic_path, settings_changes


def test_atomic_path_replaces_the_file_only_once_written(tmp_path):
    path = tmp_path / "best.keras"
    path.write_text("old")
    with atomic_path(path) as partial:
        assert partial == tmp_path / "best.partial.keras"  # the suffix kept
        partial.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["best.keras"]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.npz"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(str(path)) as partial:
            assert isinstance(partial, str) and partial.endswith(".partial.npz")
            with open(partial, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.npz"]


def test_settings_changes_records_then_names_what_changed(tmp_path):
    path = tmp_path / "run" / "settings.json"
    assert settings_changes(path, {"sigma": 0.3, "grid": (1, 2)}) == []  # recorded
    assert (
        settings_changes(path, {"sigma": 0.3, "grid": (1, 2)}) == []
    )  # tuples as lists
    assert settings_changes(path, {"sigma": 0.5, "grid": (1, 2), "seed": 1}) == [
        ("sigma", 0.3, 0.5),
        ("seed", None, 1),
    ]
