"""The command line: a tiny end-to-end `train` run, and one-line errors."""

import json
import subprocess
import sys

import keras
import pytest

import keras_gradreg as kg
from keras_gradreg.src.tools import cli
from tests.helpers import write_fake_mnist


def test_train_writes_model_history_results_and_curves(tmp_path, capsys):
    write_fake_mnist(tmp_path / "data")
    out = tmp_path / "run"
    code = cli.main([
        "train", "--data-dir", str(tmp_path / "data"), "--model", "maxout_mlp",
        "--norm", "linf", "--sigma", "0.1", "--form", "perturb", "--alpha", "0.5",
        "--epochs", "2", "--batch-size", "16", "--lr-schedule", "cosine",
        "--validation-size", "16", "--output", str(out), "--verbose", "0",
    ])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (
        results["dataset"] == "MNIST" and results["backend"] == keras.backend.backend()
    )
    assert results["test_error"] == pytest.approx(1 - results["test_accuracy"])
    assert 0.0 <= results["fgsm_accuracy"] <= 1.0
    assert (
        results["regularizer"]["norm"] == "linf" and results["settings"]["epochs"] == 2
    )
    assert {"keras", "numpy"} <= set(results["versions"])
    assert (
        len((out / "history.csv").read_text().strip().splitlines()) == 3
    )  # header + 2 epochs
    assert (out / "curves_loss.png").stat().st_size > 1000
    assert (out / "curves_grad_norm.png").exists()
    loaded = keras.saving.load_model(out / "model.keras")
    assert loaded.regularizer.norm == "linf"
    assert "test error" in capsys.readouterr().out
    # The standard suite on the flat MLP: Square views rows as 28 x 28 images.
    code = cli.main([
        "evaluate", "--model-path", str(out / "model.keras"), "--data-dir",
        str(tmp_path / "data"), "--norms", "linf", "--linf-eps", "0.1",
        "--attacks", "standard", "--limit", "16", "--output", str(tmp_path / "eval"),
    ])  # fmt: skip
    assert code == 0
    rows = json.loads((tmp_path / "eval" / "robustness.json").read_text())["report"][
        "rows"
    ]
    assert [r["attack"] for r in rows] == [
        "APGD-CE", "APGD-T", "FAB-T", "Square", "worst case"
    ]  # fmt: skip
    card = json.loads((tmp_path / "eval" / "model_card-linf-0.1.json").read_text())
    assert card["eps"] == "0.1" and card["evaluation"]["num_examples"] == 16


def test_train_with_the_maxout_protocol_resumes_and_refuses_other_settings(
    tmp_path, capsys
):
    """`--protocol maxout`: the paper's network (init +-0.005, unscaled input
    dropout), `MomentumSGD`, both stages under `<output>/protocol`, their
    picture; the same command returns the finished run; other settings in
    the same folder are refused by name."""
    write_fake_mnist(tmp_path / "data", n=48)
    out = tmp_path / "run"
    argv = [
        "train", "--protocol", "maxout", "--data-dir", str(tmp_path / "data"),
        "--norm", "l2", "--sigma", "0.3", "--validation-size", "16",
        "--epochs", "3", "--patience", "1", "--continue-epochs", "2",
        "--batch-size", "16", "--output", str(out), "--verbose", "0",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    protocol = results["protocol"]
    assert protocol["stage1_epochs"] <= 3 and protocol["continue_epochs"] <= 2
    assert protocol["match"] == "noisy" and protocol["target"] > 0
    stage1 = (out / "protocol" / "stage1" / "history.csv").read_text()
    assert len(stage1.strip().splitlines()) == 1 + protocol["stage1_epochs"]
    assert results["settings"]["lr"] == 0.1  # mnist_pi.yaml's
    assert results["train_examples"] == 32
    assert {"protocol.png", "curves_loss.png"} <= set(results["figures"])
    assert (out / "protocol.png").stat().st_size > 1000
    model = keras.saving.load_model(out / "model.keras")
    assert type(model.optimizer).__name__ == "MomentumSGD"
    assert model.regularizer.norm == "l2" and model.regularizer.sigma == 0.3
    (dropout,) = [x for x in model.layers if isinstance(x, kg.layers.ScaledDropout)]
    assert dropout.scale == 1.0
    capsys.readouterr()

    assert cli.main(argv) == 0  # finished: tested again, not trained again
    again = json.loads((out / "results.json").read_text())
    assert again["protocol"] == protocol
    assert again["test_error"] == pytest.approx(results["test_error"])
    other = [*argv[:-4], "--sigma", "0.5", *argv[-4:]]
    assert cli.main(other) == 2
    assert "--sigma: 0.3 -> 0.5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--sigma", "-1"], "sigma=-1"),
        (["train", "--alpha", "1.5"], "alpha=1.5"),
        (["train", "--norm", "0.5"], "norm=0.5"),
        (["train", "--norm", "l7"], "--norm"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--form", "exact"], "--form"),
        (["train", "--dataset", "imagenet"], "--dataset"),
        (["train", "--patience", "5"], "--patience 5 with --protocol adam"),
        (["train", "--width", "0.5"], "--width 0.5 with --model maxout_mlp"),
        (["train", "--steps", "3"], "--steps 3 with --form penalty"),
        (
            ["train", "--form", "perturb", "--no-random-start"],
            "--no-random-start with --form perturb",
        ),
        (["train", "--fd-step", "0.1"], "--fd-step 0.1 with --form penalty"),
        (
            ["train", "--protocol", "maxout", "--lr-schedule", "cosine"],
            "--lr-schedule cosine with --protocol maxout",
        ),
        (
            ["train", "--protocol", "maxout", "--model", "cifar10_conv_maxout"],
            "--model cifar10_conv_maxout",
        ),
        (
            ["train", "--protocol", "maxout", "--validation-size", "0"],
            "--validation-size 0",
        ),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, capsys, argv, message):
    write_fake_mnist(tmp_path / "data")
    argv = [
        *argv,
        "--data-dir",
        str(tmp_path / "data"),
        "--limit",
        "8",
        "--verbose",
        "0",
        "--output",
        str(tmp_path / "out"),
    ]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_gradreg", "train", "--sigma", "nan", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "sigma=nan" in result.stderr and "Traceback" not in result.stderr


def test_train_conv_maxout_on_28x28_images(tmp_path):
    write_fake_mnist(tmp_path / "data", n=16)
    code = cli.main([
        "train", "--data-dir", str(tmp_path / "data"), "--model", "mnist_conv_maxout",
        "--epochs", "1", "--batch-size", "8", "--output", str(tmp_path / "run"), "--verbose", "0",
    ])  # fmt: skip
    assert code == 0
    loaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert tuple(loaded.input_shape) == (None, 28, 28)


def test_cli_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    write_fake_mnist(tmp_path / "data", n=32)
    base = [
        "train", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
        "--limit", "16", "--verbose", "0",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*base, "--fgsm-eps", "-1", "--output", str(tmp_path / "a")])
    assert exit_info.value.code == 2 and "--fgsm-eps" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing trained or written
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli.main([*base, "--output", str(a_file)]) == 2
    assert "existing file" in capsys.readouterr().err
    code = cli.main([
        "train", "--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "b"),
    ])  # fmt: skip
    assert code == 2 and "data_dir" in capsys.readouterr().err


def test_cli_names_corrupt_data_and_model_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.npz").write_bytes(b"not a zip")
    code = cli.main([
        "train", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "o"),
    ])  # fmt: skip
    assert (
        code == 2
        and "mnist.npz is not a readable dataset file" in capsys.readouterr().err
    )
    (tmp_path / "garbage.keras").write_bytes(b"garbage")
    code = cli.main([
        "evaluate", "--model-path", str(tmp_path / "garbage.keras"),
        "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "e"),
    ])  # fmt: skip
    assert code == 2 and "not a loadable Keras model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options,message",
    [
        (["--attacks", "fgm", "--steps", "5"], "--steps 5 with --attacks fgm"),
        (["--attacks", "standard", "--restarts", "2"], "--restarts 2 with"),
        (["--norms", "linf", "--l2-eps", "1"], "--l2-eps 1 with --norms linf"),
        (["--noise-draws", "3"], "--noise-draws 3 with no --noise-stds"),
        (["--attacks", "rand", "fgm"], "--attacks rand runs an AutoAttack version"),
    ],
)
def test_evaluate_refuses_options_that_would_do_nothing(
    tmp_path, capsys, options, message
):
    argv = ["evaluate", "--model-path", str(tmp_path / "missing.keras"), *options]
    assert cli.main([*argv, "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()
