"""The examples end to end on small slices of real data, and the public API
against its reference page."""

import importlib
import os

import keras
import pytest

from tests.helpers import (
    ROOT,
    import_example,
    on_one_backend,
    requires_mnist,
    write_image_folder,
)


@pytest.mark.slow
@requires_mnist
@on_one_backend("the forms and the standard suite in their own tests", "jax")
def test_demo_compares_plain_and_family_members(capsys):
    demo_mnist = import_example("demo_mnist")
    rows = demo_mnist.main(
        [
            "--epochs",
            "2",
            "--train-limit",
            "3000",
            "--test-limit",
            "1000",
            "--robust-points",
            "100",
            "--fgsm",
            "--verbose",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    assert "robust acc. (APGD-CE, APGD-T, Square; linf eps=0.1, 100 images)" in printed
    assert [r["model"] for r in rows] == [label for label, _ in demo_mnist.MEMBERS]
    for row in rows:
        assert row["model"] in printed
        assert 0.75 < row["clean"] <= 1.0  # it learned
        # The standard suite is at least as strong as FGSM on the same images.
        assert row["robust"] <= row["fgsm"] <= 1.0
    plain, fgsm_trained, _ = rows
    assert fgsm_trained["fgsm"] > plain["fgsm"]  # adversarial training buys robustness


@pytest.mark.slow
@on_one_backend(
    "the forms in tests/family, the standard suite in test_apgd.py", "torch"
)
def test_image_folder_example_trains_evaluates_and_saves(tmp_path, monkeypatch, capsys):
    """A small folder in CIFAR-10's layout, found where the default looks
    (`$KERAS_GRADREG_DATA/cifar10-jpeg`), then a folder of class subfolders
    alone, split in two."""
    write_image_folder(tmp_path / "data" / "cifar10-jpeg", per_class=6)
    monkeypatch.setenv("KERAS_GRADREG_DATA", str(tmp_path / "data"))
    example = import_example("train_image_folder")
    argv = [
        "--epochs", "2", "--filters", "4", "8", "--robust-points", "10",
        "--verbose", "0", "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    summary = example.main(argv)
    printed = capsys.readouterr().out
    assert "10 classes, 60 held-out images" in printed
    assert "Robust accuracy under the standard suite" in printed
    assert summary["robust_points"] == 10 and summary["seconds_per_epoch"] > 0
    assert 0.0 <= summary["robust"] <= 1.0 and 0.0 <= summary["clean"] <= 1.0
    model = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert model.regularizer.form.name == "fgsm_rs" and model.regularizer.alpha == 0.5
    assert model.regularizer.sigma == pytest.approx(8 / 255)  # warmed up to it
    assert model.regularizer.input_range == (0.0, 1.0)
    assert model.output_shape == (None, 10)
    # No test/ folder: --test-split of the one folder is held out.
    argv = [*argv[:-1], str(tmp_path / "plain"), "--sigma", "0", "--test-split", "0.25"]
    argv[1] = "1"  # one epoch
    example.main([*argv, "--data", str(tmp_path / "data" / "cifar10-jpeg" / "train")])
    assert "10 classes, 15 held-out images" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        example.main([*argv, "--data", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "--data must be a folder of class subfolders" in capsys.readouterr().err


@pytest.mark.slow
@on_one_backend("the attacks in tests/evaluation, the plots in test_plots.py", "torch")
def test_saved_model_example_reports_and_draws(tmp_path, monkeypatch, capsys):
    """Any saved Keras classifier, on an image folder and on a dataset the
    library loads: the report printed and written, and both pictures."""
    write_image_folder(tmp_path / "data" / "cifar10-jpeg", per_class=2)
    monkeypatch.setenv("KERAS_GRADREG_DATA", str(tmp_path / "data"))
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "plain.keras")
    example = import_example("evaluate_saved_model")
    folder = tmp_path / "data" / "cifar10-jpeg" / "test"
    report = example.main(
        [str(tmp_path / "plain.keras"), "--images", str(folder), "--points", "12"]
    )
    printed = capsys.readouterr().out
    assert (
        report.num_examples == 12
        and "Robust accuracy under the standard suite" in printed
    )
    assert [r["eps"] for r in report.rows if r["attack"] == "worst case"] == [
        pytest.approx(e / 255) for e in (4, 8)
    ]
    for eps in (4, 8):  # robust points are among the correctly classified
        assert report.accuracy("linf", eps / 255) <= report.clean_accuracy
    assert "| linf | 0.0313725 |" in (tmp_path / "report.md").read_text()
    for picture in ("robust_accuracy.png", "gradients.png"):
        assert (tmp_path / picture).stat().st_size > 5000, picture
    out = tmp_path / "cifar"
    report = example.main(
        [str(tmp_path / "plain.keras"), "--dataset", "cifar10", "--points", "8",
         "--attacks", "fast", "--norm", "l2", "--eps", "0.5", "--output", str(out)]
    )  # fmt: skip
    assert report.num_examples == 8 and report.suite.startswith("attacks FGM, PGD-20")
    assert (out / "gradients.png").exists() and (out / "robust_accuracy.png").exists()
    flat = keras.Sequential([keras.Input((3072,)), keras.layers.Dense(10)])
    flat.save(tmp_path / "flat.keras")
    with pytest.raises(ValueError, match=r"input shape \(3072,\)"):
        example.main([str(tmp_path / "flat.keras"), "--images", str(folder)])
    with pytest.raises(SystemExit) as exit_info:
        example.main(
            [str(tmp_path / "plain.keras"), "--dataset", "mnist", "--eps", "0"]
        )
    assert exit_info.value.code == 2
    assert "--eps must be > 0. Received: [0.0]" in capsys.readouterr().err


def test_public_api_is_flat_documented_and_registered():
    import keras_gradreg as kg
    from keras_gradreg.src.api_export import PUBLIC_API

    for name in kg.__all__:
        obj = getattr(kg, name)
        if name != "FORMS":
            assert obj.__doc__ and obj.__doc__.strip(), name
    import keras_gradreg.src.tools.cli  # noqa: F401  (modules not imported by the package)
    import keras_gradreg.src.tools.plots  # noqa: F401

    for path, obj in PUBLIC_API.items():
        module, _, attribute = path.rpartition(".")
        assert getattr(importlib.import_module(module), attribute) is obj, path
        assert obj.__doc__ and obj.__doc__.strip(), path
        if isinstance(obj, type) and hasattr(obj, "get_config"):
            assert (
                keras.saving.get_registered_object(f"keras_gradreg>{obj.__name__}")
                is obj
            ), path
    assert os.path.basename(kg.__file__) == "__init__.py"


@pytest.mark.slow
@requires_mnist
@on_one_backend("test_semi_supervised.py and test_virtual.py", "torch")
def test_semi_supervised_example_trains_both_runs_and_resumes(tmp_path, capsys):
    semi = import_example("semi_supervised_mnist")
    argv = [
        "--epochs", "1", "--steps-per-epoch", "4", "--labeled-batch", "16",
        "--unlabeled-batch", "32", "--test-limit", "200", "--output", str(tmp_path),
        "--verbose", "0", "--sigma", "2", "0.5", "--validation", "100",
        "--widths", "32", "16",
    ]  # fmt: skip
    results = semi.main(argv)
    assert list(results) == ["supervised", "virtual-sigma2", "virtual-sigma0.5"]
    assert results["virtual-sigma0.5"]["regularizer"]["sigma"] == 0.5
    # Separate passes by default, for both runs: 16 labeled rows per batch.
    assert {row["regularizer"]["labeled_rows"] for row in results.values()} == {16}
    for row in results.values():
        assert 0.0 <= row["test_error"] <= 1.0
        assert 0.0 <= row["validation_error"] <= 1.0
    assert len(list(tmp_path.glob("*-seed0.json"))) == 3
    assert (tmp_path / "validation.png").stat().st_size > 0
    capsys.readouterr()
    assert semi.main(argv) == results
    output = capsys.readouterr().out
    assert "done earlier" in output and output.count("(chosen on validation)") == 1
    with pytest.raises(SystemExit):  # another network in the same folder
        semi.main([*argv[:-2], "32"])
    assert "holds runs made with other settings" in capsys.readouterr().err


def test_semi_supervised_network_normalizes_every_linear_layer():
    semi = import_example("semi_supervised_mnist")
    kinds = lambda model: [type(layer).__name__ for layer in model.layers[2:]]  # noqa: E731
    assert kinds(semi.build_network((8,))) == [
        "Dense", "BatchNormalization", "Activation",
        "Dense", "BatchNormalization", "Activation",
    ]  # fmt: skip
    plain_output = semi.build_network((8,), output_batch_norm=False)
    assert kinds(plain_output)[-2:] == ["Dense", "Activation"]
    assert plain_output.layers[-2].use_bias and not plain_output.layers[2].use_bias
    assert plain_output.layers[-1].activation.__name__ == "softmax"


def test_every_public_name_is_in_the_api_reference():
    import re

    import keras_gradreg as kg

    reference = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: keras_gradreg\.(\w+)$", reference, re.M))
    for name in kg.__all__:
        assert name in documented or f"`keras_gradreg.{name}`" in reference, name
        obj = getattr(kg, name)
        if name != "FORMS":
            assert obj.__doc__ and obj.__doc__.strip(), name
    # Every page of docs/ is in the site's navigation.
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert str(page.relative_to(ROOT / "docs")) in nav, page
