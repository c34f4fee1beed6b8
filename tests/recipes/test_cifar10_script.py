"""The CIFAR-10 recipe's script end to end: a few steps on a slice."""

import json

import pytest

from reproductions import cifar10_recipe
from tests.helpers import on_one_backend, write_image_folder


@pytest.mark.slow
@on_one_backend("the recipe's pieces in tests/recipes on every backend", "torch")
def test_script_trains_tests_resumes_and_refuses_other_settings(tmp_path, capsys):
    write_image_folder(tmp_path / "data" / "cifar10-jpeg", per_class=3)
    script = cifar10_recipe
    out = tmp_path / "run"
    argv = [
        "--recipe", "fgsm_rs", "--width", "2", "--limit", "24", "--steps", "2",
        "--epochs", "2", "--ema", "0.9", "--standard-points", "8",
        "--apgd-steps", "2", "--square-queries", "5", "--output", str(out),
        "--data-dir", str(tmp_path / "data"), "--verbose", "0",
    ]  # fmt: skip
    row = script.main(argv)
    assert row["train"]["steps_per_epoch"] == 1  # 24 images, batch 128
    assert row["train"]["train_examples"] == 24 and row["points"] == 8
    after = list(row["after"].values())
    assert after == sorted(after, reverse=True)  # the suite's cascade
    assert row["robust_accuracy"] <= row["clean_accuracy_points"]
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header and two epochs
    table = (out / "results.md").read_text()
    assert "CIFAR-10 (JPEG copy)" in table and "Wong2020Fast" in table
    assert json.loads((out / "settings.json").read_text())["recipe"]["epochs"] == 2
    capsys.readouterr()
    assert script.main(argv) == row  # finished: read back, nothing trained
    assert "== train" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        script.main([*argv[:-2], "--verbose", "0", "--width", "4"])
    assert exit_info.value.code == 2
