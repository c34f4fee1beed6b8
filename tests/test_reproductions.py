"""The reproduction scripts (`reproductions/`) end to end on small slices of
real MNIST and of an image folder, and the pieces they build."""

import json

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from reproductions import (
    ablate_paper,
    compare_inner_max,
    compare_members,
    goodfellow2015,
    paired_gains,
    paper_study,
    reproduce_cifar10,
    reproduce_mnist,
    reproduce_paper,
    sigmoid_mlp,
    standard_suite,
)
from tests.helpers import (
    on_one_backend,
    requires_mnist,
    write_fake_mnist,
    write_image_folder,
)


def assert_resumes(main, argv, rows, trained_marker, capsys):
    """A second run with the same arguments reads every finished run back
    and trains none again."""
    capsys.readouterr()
    assert main(argv) == rows
    assert trained_marker not in capsys.readouterr().out


def assert_refuses(main, argv):
    """A resume with other settings stops with a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


@pytest.mark.slow
@requires_mnist
@on_one_backend("the protocol in test_protocol.py, the noise in test_noise.py", "torch")
def test_protocol_reproduction_writes_tables_i_and_iv_and_resumes(tmp_path, capsys):
    argv = [
        "--output", str(tmp_path), "--limit", "200", "--seeds", "0", "1",
        "--members", "l2", "plain", "--select-epochs", "1", "--max-epochs", "2",
        "--patience", "1", "--continue-max-epochs", "1", "--noise-draws", "2",
        "--square-queries", "50", "--apgd-steps", "10", "--standard-points", "32",
        "--verbose", "0",
    ]  # fmt: skip
    rows = reproduce_paper.main(argv)
    assert [(r["member"], r["seed"]) for r in rows] == [
        ("l2", 0),
        ("plain", 0),
        ("l2", 1),
        ("plain", 1),
    ]
    for row in rows:
        assert 1 <= row["best_epoch"] <= 2 and row["continue_epochs"] == 1
        assert 0.0 <= row["noise 0.3 clipped"]["error"] <= 1.0
        assert row["robust"]["linf 0.1"] <= row["fgsm_accuracy"] + 1e-9
        # The suite's cascade: each attack leaves at most what the one before did.
        after = [row["standard"]["l2 1"][a] for a in standard_suite.ATTACK_COLUMNS]
        assert after == sorted(after, reverse=True)
    table = (tmp_path / "results.md").read_text()
    assert "Table I" in table and "Table IV" in table and "0.78%" in table
    assert "Square with 50 queries" in table and "overstated by" in table
    assert "APGD-T with 10 steps" in table
    assert "(n=2)" in table  # mean ± std over the two seeds
    assert_resumes(reproduce_paper.main, argv, rows, "== final", capsys)
    assert_refuses(reproduce_paper.main, [*argv, "--patience", "2"])


@pytest.mark.slow
@requires_mnist
@on_one_backend("the convolutional network in test_networks.py", "torch")
def test_table_ii_records_finished_runs_apart_from_checkpoints(tmp_path, capsys):
    """Table II's convolutional network trains through the same script, and
    the finished runs' records (`--record`, the folder the repository keeps)
    are enough to rebuild the tables on a machine without the checkpoints."""
    import shutil

    record, output = tmp_path / "record", tmp_path / "runs"
    argv = [
        "--table", "2", "--output", str(output), "--record", str(record),
        "--limit", "32", "--seeds", "0", "--members", "plain", "--max-epochs", "2",
        "--patience", "1", "--continue-max-epochs", "1", "--noise-draws", "1",
        "--square-queries", "10", "--apgd-steps", "2", "--standard-points", "16",
        "--verbose", "0",
    ]  # fmt: skip
    (row,) = reproduce_paper.main(argv)
    assert row["member"] == "plain" and 0.0 <= row["test_error"] <= 1.0
    table = (record / "results.md").read_text()
    assert "Table II: MNIST, convolutional maxout" in table and "0.45%" in table
    assert "20.17%" in table  # Table IV's convolutional row
    assert {p.name for p in (record / "histories").iterdir()} == {
        "plain-seed0-stage1.csv",
        "plain-seed0-stage2.csv",
    }
    assert (record / "results" / "plain-seed0-standard.json").exists()
    assert (record / "curves.png").exists() and "(curves.png)" in table
    assert not list(record.rglob("*.keras"))  # checkpoints stay in --output
    shutil.rmtree(output)  # a new machine: the records alone
    assert_resumes(reproduce_paper.main, argv, [row], "== final", capsys)
    assert_refuses(reproduce_paper.main, [*argv[:1], "1", *argv[2:]])  # Table I


def test_ablations_change_one_thing_of_table_i_each():
    """Each ablation builds Table I's network with its one change, runs in
    its own order, and keeps Table I's settings file as it was."""
    ablations = ablate_paper.ABLATIONS
    protocol = reproduce_paper.MAXOUT_PROTOCOLS["mnist_pi"]

    def build(member):
        regularizer = {"sigma": 0.3, **ablations.members[member]}
        network = ablations.networks.get(member)
        return reproduce_paper.build(regularizer, protocol, 1, network)

    def largest_kernel_entry(model):
        return max(
            float(keras.ops.max(keras.ops.abs(w)))
            for w in model.weights
            if "kernel" in w.path
        )

    def input_dropout_scale(model):
        (layer,) = [x for x in model.layers if type(x).__name__ == "ScaledDropout"]
        return layer.scale

    table_i = build("l2-perturb")
    assert largest_kernel_entry(table_i) <= 0.005 and input_dropout_scale(table_i) == 1
    assert (table_i.regularizer.form.name, table_i.regularizer.alpha) == (
        "perturb",
        0.5,
    )
    assert table_i.regularizer.input_range == (0.0, 1.0)
    regularizer = {"sigma": 0.25, **reproduce_paper.PAPER_STUDY.members["fgsm"]}
    unclipped = reproduce_paper.build(regularizer, protocol, 1, clip=False)
    assert unclipped.regularizer.input_range is None  # Goodfellow et al.'s code
    assert largest_kernel_entry(build("plain-glorot")) > 0.01  # Glorot's range
    assert input_dropout_scale(build("plain-scaled-input-dropout")) is None
    assert reproduce_paper.plan([0, 1], list(ablations.members), ablations) == [
        (member, 0) for member in ablations.members
    ]
    # Table I's folders resume: its settings keep their keys and values.
    assert set(reproduce_paper.PAPER_STUDY.settings()) == {"grids", "members"}
    assert set(ablations.settings()) == {
        "grids", "members", "networks", "shared_sigma",
    }  # fmt: skip
    # The noise ablation trains at the form ablation's sigma, chosen once.
    assert ablations.sigma_source("l2-perturb-fresh") == "l2-perturb"
    assert ablations.sigma_source("l2-perturb") == "l2-perturb"
    assert ablations.sigma_source("plain-glorot") is None
    study = paper_study.Study
    with pytest.raises(ValueError, match="'a' -> 'b'"):
        study(members={}, grids={"a": (0.1,)}, labels={}, shared_sigma={"a": "b"})


def test_paired_gains_compare_each_seed_with_plain_of_that_seed(tmp_path, capsys):
    def record(folder, member, seed, error):
        path = tmp_path / folder / "results" / f"{member}-seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"member": member, "seed": seed, "test_error": error})
        )
        standard = path.with_name(f"{member}-seed{seed}-standard.json")
        standard.write_text("{}")  # the suite's record is not a run

    for seed, error in enumerate([0.0105, 0.0107, 0.0112]):
        record("table", "plain", seed, error)
    for seed, error in [(0, 0.0090), (1, 0.0095), (2, 0.0094)]:
        record("noclip", "fgsm", seed, error)
    text = paired_gains.main([
        "--plain", str(tmp_path / "table"),
        "--row", f"FGSM, unclipped={tmp_path / 'noclip'}:fgsm:0.84",
        "--output", str(tmp_path / "gains.md"),
    ])  # fmt: skip
    # Gains -0.15, -0.12, -0.18: mean -0.15, sd 0.03; the paper's -0.10.
    assert "| FGSM, unclipped | 0.93 ± 0.03 (n=3) |" in text
    assert "| −0.15 ± 0.03 (n=3) | 0.84 | −0.10 |" in text
    assert "| maxout + dropout | 1.08 ± 0.04 (n=3) | 1.05, 1.07, 1.12 |" in text
    assert (tmp_path / "gains.md").read_text() == text
    with pytest.raises(SystemExit):
        paired_gains.main(["--plain", str(tmp_path / "table"), "--row", "no folder"])
    assert "Received: no folder" in capsys.readouterr().err


@pytest.mark.slow
@requires_mnist
@on_one_backend("the protocol in test_protocol.py, clipping in tests/training", "torch")
def test_a_given_sigma_skips_the_selection_and_is_a_setting(tmp_path, capsys):
    """`--sigma` trains a member whose sigma the study selects with the one
    given, selects nothing, and is part of the settings a resume must match;
    `--no-clip` builds the member without an input range."""
    argv = [
        "--output", str(tmp_path), "--limit", "32", "--seeds", "0",
        "--members", "l2-perturb-fresh", "--sigma", "0.7", "--no-clip",
        "--max-epochs", "1", "--patience", "1", "--continue-max-epochs", "1",
        "--noise-draws", "1", "--square-queries", "10", "--apgd-steps", "2",
        "--standard-points", "16", "--verbose", "0",
    ]  # fmt: skip
    (row,) = reproduce_paper.main(argv, study=ablate_paper.ABLATIONS)
    assert row["regularizer"]["sigma"] == 0.7
    assert row["regularizer"]["share_noise"] is False
    assert not (tmp_path / "select").exists()
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert (settings["sigma"], settings["clip"]) == (0.7, False)
    model = keras.saving.load_model(row["model_path"])
    assert model.regularizer.input_range is None
    assert_refuses(
        lambda a: reproduce_paper.main(a, study=ablate_paper.ABLATIONS),
        [*argv[:9], "0.5", *argv[10:]],
    )
    with pytest.raises(SystemExit):
        reproduce_paper.main(["--sigma", "-1", "--output", str(tmp_path / "x")])
    assert "--sigma must be > 0. Received: -1.0" in capsys.readouterr().err


@requires_mnist
@on_one_backend(
    "the perturbed-input form in tests/family, the protocol in tests/maxout", "torch"
)
def test_sigmoid_mlp_row_trains_its_stated_network_against_the_papers_number(
    tmp_path, capsys
):
    """Table I's sigmoid MLP row: the network its study states (two layers
    of 800 sigmoid units, Glorot-uniform, unscaled input dropout, max-norm
    on every kernel), trained through the protocol's script beside the
    paper's 0.93% for p = 2, with no maxout row of Table IV beside it."""
    model = sigmoid_mlp.sigmoid_mlp(sigma=0.0)
    hidden = [layer for layer in model.layers if layer.name.startswith("sigmoid_")]
    assert [(h.units, h.activation.__name__) for h in hidden] == [(800, "sigmoid")] * 2
    assert all(
        layer.kernel_constraint.max_value == kg.models.MNIST_MAX_NORM
        for layer in [*hidden, model.get_layer("softmax")]
    )
    largest = float(keras.ops.max(keras.ops.abs(hidden[0].kernel)))
    assert 0.005 < largest <= (6 / (784 + 800)) ** 0.5  # Glorot's range
    (dropout,) = [x for x in model.layers if type(x).__name__ == "ScaledDropout"]
    assert dropout.scale == 1.0
    argv = [
        "--output", str(tmp_path), "--limit", "32", "--seeds", "0", "--no-clip",
        "--max-epochs", "1", "--patience", "1", "--continue-max-epochs", "1",
        "--noise-draws", "1", "--square-queries", "10", "--apgd-steps", "2",
        "--standard-points", "16", "--verbose", "0",
    ]  # fmt: skip
    run = lambda a: reproduce_paper.main(a, study=sigmoid_mlp.SIGMOID_STUDY)  # noqa: E731
    rows = run(argv)
    assert [(r["member"], r["regularizer"]["sigma"]) for r in rows] == [
        ("plain", 0.0),
        ("l2-perturb-fresh", 1.0),
    ]
    assert keras.saving.load_model(rows[1]["model_path"]).name == "mnist_sigmoid_mlp"
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["builder"] == "sigmoid_mlp"
    assert settings["protocol"]["learning_rate"] == 3.0  # the study's own
    table = (tmp_path / "results.md").read_text()
    assert "| sigmoid MLP + dropout | 0 |  |" in table  # no paper number
    assert "fresh masks | 1 | 0.93% |" in table
    assert "1.14%" not in table and "0.94%" not in table  # maxout's rows
    assert_resumes(run, argv, rows, "== final", capsys)


@pytest.mark.slow
@requires_mnist
@on_one_backend(
    "the protocol in test_protocol.py, RobustAccuracy in tests/evaluation", "torch"
)
def test_goodfellow_recipe_stops_on_adversarial_accuracy_and_retrains(tmp_path, capsys):
    """Goodfellow et al. 2015's recipe: a wider network, early stopping on
    FGSM validation accuracy, then a new network trained from scratch on
    train + validation for the best epoch's number of epochs."""
    argv = [
        "--output", str(tmp_path), "--limit", "64", "--units", "8",
        "--max-epochs", "3", "--patience", "1", "--noise-draws", "1",
        "--square-queries", "10", "--apgd-steps", "2", "--standard-points", "16",
        "--verbose", "0",
    ]  # fmt: skip
    (row,) = goodfellow2015.main(argv)
    history = (tmp_path / "runs" / "seed0" / "stage1" / "history.csv").read_text()
    assert "val_robust_accuracy" in history.splitlines()[0]
    stage1_epochs = len(history.splitlines()) - 1
    assert row["best_epoch"] <= stage1_epochs <= 3
    assert row["retrain_epochs"] == row["best_epoch"]
    stage2 = (tmp_path / "runs" / "seed0" / "stage2" / "history.csv").read_text()
    assert len(stage2.splitlines()) - 1 == row["best_epoch"]
    model = keras.saving.load_model(row["model_path"])
    assert model.get_layer("maxout_1").units == 8
    assert model.regularizer.input_range is None and model.regularizer.sigma == 0.25
    assert "0.782%" in (tmp_path / "results.md").read_text()
    assert_resumes(goodfellow2015.main, argv, [row], "== goodfellow2015", capsys)
    assert_refuses(goodfellow2015.main, [*argv, "--units", "16"])


@pytest.mark.slow
@requires_mnist
@on_one_backend("training in test_models.py, the attacks in test_attacks.py", "torch")
def test_reproduction_writes_tables_and_resumes_without_retraining(tmp_path, capsys):
    argv = [
        "--budget", "quick", "--select-epochs", "1", "--final-epochs", "1",
        "--limit", "256", "--output", str(tmp_path), "--verbose", "0",
        "--square-queries", "50", "--apgd-steps", "10", "--standard-points", "32",
    ]  # fmt: skip
    # One member first, as a second process would run it side by side...
    assert [r["model"] for r in reproduce_mnist.main([*argv, "--members", "l1"])] == [
        "l1 penalty"
    ]
    capsys.readouterr()
    rows = reproduce_mnist.main(argv)
    # ...and the whole table reads it back instead of training it again.
    assert "'norm': 'l1'" not in capsys.readouterr().out
    assert [r["model"] for r in rows][:2] == [
        "maxout + dropout",
        "FGSM adv. training (linf, perturb, alpha 0.5, sigma 0.25)",
    ]
    assert len(rows) == 5 and all(0.0 <= r["test_error"] <= 1.0 for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert "| linf penalty |" in table and "0.94%" in table
    assert "PGD linf 0.2" in table and "![gradients](gradients.png)" in table
    assert "standard suite linf 0.1" in table and "Square with 50 queries" in table
    for row in rows:  # the worst case over FGM and PGD never beats FGSM alone
        assert row["pgd_accuracy"]["linf 0.1"] <= row["fgsm_accuracy"] + 1e-9
    assert (tmp_path / "robust_accuracy.png").stat().st_size > 5000
    assert len(list((tmp_path / "runs").glob("robust-*.json"))) == 5
    assert len(list((tmp_path / "runs").glob("select-*.json"))) == 6
    capsys.readouterr()
    assert reproduce_mnist.main(argv) == rows  # every run is read back...
    assert "== select" not in capsys.readouterr().out  # ...none is trained again
    # Resuming with another schedule would mix results: refused by name.
    with pytest.raises(SystemExit) as exit_info:
        reproduce_mnist.main([*argv, "--final-epochs", "2"])
    assert exit_info.value.code == 2
    assert "final_epochs: 1 -> 2" in capsys.readouterr().err


def test_reproduction_refuses_an_unknown_member(capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_mnist.main(["--members", "plain", "sigmoid"])
    assert exit_info.value.code == 2
    assert "--members: invalid choice: 'sigmoid'" in capsys.readouterr().err


@pytest.mark.slow
@requires_mnist
@on_one_backend("its forms in test_multistep.py", "torch")
def test_inner_max_comparison_writes_its_table_and_resumes(tmp_path, capsys):
    compare = compare_inner_max
    argv = [
        "--epochs", "1", "--limit", "256", "--steps", "2", "--output", str(tmp_path),
        "--standard-points", "32", "--square-queries", "20", "--apgd-steps", "5",
        "--verbose", "0",
    ]  # fmt: skip
    rows = compare.main(argv)
    assert list(rows) == [
        "maxout + dropout", "linf penalty", "FGSM training (perturb, alpha 0.5)",
        "multistep k=2 (alpha 0.5)",
    ]  # fmt: skip
    for row in rows.values():
        assert 0.0 <= row["test_error"] <= 1.0 and row["seconds_per_epoch"] > 0
        # The suite attacks what FGM + PGD-20 left: never more robust.
        suite = row["standard"]["linf 0.1"]
        assert suite["worst case"] <= suite["FGM + PGD-20"] + 1e-9
    table = (tmp_path / "results.md").read_text()
    assert "| multistep k=2 (alpha 0.5) |" in table and "x plain" in table
    assert_resumes(compare.main, argv, rows, "== {", capsys)
    assert_refuses(compare.main, [*argv[:1], "2", *argv[2:]])  # other epochs


@requires_mnist
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="hand-written JAX: the same on every Keras backend",
)
def test_semi_supervised_reference_runs_both_layouts(tmp_path):
    from reproductions import semi_supervised_reference as reference

    argv = [
        "--epochs", "1", "--steps-per-epoch", "3", "--labeled-batch", "20",
        "--unlabeled-batch", "40", "--widths", "32", "--validation", "100",
        "--batch-norm",
    ]  # fmt: skip
    for passes in ("separate", "mixed"):
        path = tmp_path / f"{passes}.json"
        result = reference.main([*argv, "--passes", passes, "--output", str(path)])
        assert 0.0 <= result["validation_accuracy"][0] <= 1.0
        assert result["divergence"][0] > 0.0  # sigma 0.3 moves the predictions
        assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    # sigma 0: x + r = x, so the divergence is exactly zero.
    result = reference.main([*argv, "--sigma", "0"])
    assert result["divergence"][0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SystemExit):
        reference.main([*argv, "--sigma", "-1"])


def test_table_iii_inits():
    """`--init paper-width` divides the paper's init range (0.005) by
    sqrt(width) on every layer whose fan-in the width shrinks, and only
    there; `--init glorot` is Keras's Glorot uniform (range sqrt(6 / (fan_in
    + fan_out))); another name is refused by name."""
    cifar = reproduce_cifar10
    protocol = cifar.MAXOUT_PROTOCOLS["cifar10"]
    ranges = {}
    for init in cifar.INITS:
        model = cifar.build({"sigma": 0.0}, protocol, 0.25, 10, init)
        ranges[init] = {
            layer.name: float(np.abs(keras.ops.convert_to_numpy(layer.kernel)).max())
            for layer in model.layers
            if hasattr(layer, "kernel")
        }
    assert set(cifar.WIDER_FAN_IN) < set(ranges["paper-width"])
    for name, paper in ranges["paper"].items():
        assert 0.004 < paper <= 0.005, name  # uniform in +-0.005
        expected = 2.0 if name in cifar.WIDER_FAN_IN else 1.0  # 1 / sqrt(0.25)
        widened = ranges["paper-width"][name]
        assert widened / 0.005 == pytest.approx(expected, rel=0.2), name
        assert widened <= 0.005 * expected + 1e-9, name
    softmax = model.get_layer("softmax").kernel.shape  # (fan_in, 10)
    glorot = np.sqrt(6.0 / (softmax[0] + softmax[1]))
    assert ranges["glorot"]["softmax"] == pytest.approx(glorot, rel=0.2)
    assert ranges["glorot"]["softmax"] <= glorot
    with pytest.raises(ValueError, match="Received: init='he'"):
        cifar.build({"sigma": 0.0}, protocol, 0.25, 10, "he")


@pytest.mark.slow
@on_one_backend(
    "the network in test_networks.py, the protocol in test_protocol.py", "torch"
)
def test_table_iii_picks_sigma_on_validation_and_retrains(
    tmp_path, monkeypatch, capsys
):
    """Table III on a small image folder: the l2 member's 40K row is the
    sigma with the best validation accuracy, its 50K row a retraining with
    that sigma; a second run reads everything back, as does the table call
    after `--retrain-sigma` retrained the chosen sigma ahead of it."""
    write_image_folder(tmp_path / "data" / "cifar10-jpeg", per_class=8)
    monkeypatch.setenv("KERAS_GRADREG_DATA", str(tmp_path / "data"))
    cifar = reproduce_cifar10
    argv = [
        "--output", str(tmp_path / "runs"), "--record", str(tmp_path / "record"),
        "--width", "0.05", "--max-epochs", "2", "--patience", "1",
        "--retrain-epochs", "1", "--sigmas", "0.3", "1.0", "--verbose", "0",
        "--init", "glorot", "--conv-lr-scale", "0.3",
    ]  # fmt: skip
    first = cifar.main([*argv, "--members", "l2", "--sigmas", "0.3", "--only-40k"])
    assert first["l2"]["50k"] is None and len(first["l2"]["candidates"]) == 1
    assert "| — |" in (tmp_path / "record" / "results.md").read_text()
    capsys.readouterr()
    rows = cifar.main(argv)
    assert "== 40K l2 sigma=0.3" not in capsys.readouterr().out  # read back
    assert list(rows) == ["plain", "l2"]
    candidates = rows["l2"]["candidates"]
    assert [r["sigma"] for r in candidates] == [0.3, 1.0]
    assert rows["l2"]["40k"]["best"] == max(r["best"] for r in candidates)
    assert rows["l2"]["50k"]["epochs"] == 1
    # The 50K runs' per-epoch logs are recorded beside the 40K runs'.
    for name in ("plain-0", f"l2-{rows['l2']['40k']['sigma']:g}"):
        log = (tmp_path / "record" / "histories" / f"{name}-50k.csv").read_text()
        assert log.startswith("epoch,") and len(log.splitlines()) == 2
    table = (tmp_path / "record" / "results.md").read_text()
    assert "CIFAR-10 (JPEG copy)" in table and "13.26%" in table and "12.28%" in table
    assert "Validation accuracy of the l2 40K runs by sigma" in table
    assert "Glorot uniform init" in table and "learning rate x0.3" in table
    assert "(test error, seed 0;" in table
    assert (tmp_path / "record" / "curves.png").exists() and "(curves.png)" in table
    assert_resumes(cifar.main, argv, rows, "== 40K", capsys)
    # A call for one member keeps the other's finished row in the table, and
    # reads its own recorded 50K retraining back.
    cifar.main([*argv, "--members", "l2", "--only-40k"])
    partial = (tmp_path / "record" / "results.md").read_text()
    assert "| conv maxout + dropout | 0 |" in partial and "| — |" not in partial
    # --retrain-sigma: the chosen sigma's 50K run is the table's (read back);
    # another sigma's is trained and recorded but leaves the table as it was.
    chosen = rows["l2"]["40k"]["sigma"]
    (other,) = {0.3, 1.0} - {chosen}
    # A call for the other sigma alone leaves the chosen one in the table.
    cifar.main([*argv, "--members", "l2", "--sigmas", str(other), "--only-40k"])
    partial = (tmp_path / "record" / "results.md").read_text()
    assert f"| + gradient p = 2 (l2 penalty) | {chosen:g} |" in partial
    capsys.readouterr()
    assert cifar.main([*argv, "--retrain-sigma", str(chosen)]) == {
        "l2": rows["l2"]["50k"]
    }
    assert "== 50K" not in capsys.readouterr().out
    cifar.main([*argv, "--retrain-sigma", str(other)])
    assert f"== 50K l2 sigma={other:g}" in capsys.readouterr().out
    assert (tmp_path / "record" / "results" / f"l2-{other:g}-50k.json").exists()
    assert cifar.main(argv)["l2"]["50k"] == rows["l2"]["50k"]
    assert_refuses(cifar.main, [*argv, "--retrain-sigma", "1", "--only-40k"])
    assert_refuses(cifar.main, [*argv, "--retrain-sigma", "1", "--members", "plain"])
    assert_refuses(cifar.main, [*argv, "--retrain-sigma", "0"])
    assert_refuses(cifar.main, [*argv, "--width", "0.1"])
    assert_refuses(cifar.main, [*argv, "--conv-lr-scale", "0.05"])


@pytest.mark.slow
@on_one_backend("the members in tests/family/, the suite in tests/evaluation/", "torch")
def test_members_study_writes_its_table_and_curves_and_resumes(
    tmp_path, capsys, monkeypatch
):
    data = tmp_path / "data"
    write_fake_mnist(data, n=96, n_test=520)  # 500 held-out images + 20
    monkeypatch.setenv("KERAS_GRADREG_DATA", str(data))
    argv = [
        "--settings", "mnist-collapse", "--members", "plain", "fgsm", "gradalign",
        "--seeds", "0", "--epochs", "2", "--warmup-epochs", "2", "--train-limit", "64",
        "--standard-points", "20", "--apgd-steps", "3", "--square-queries", "5",
        "--output", str(tmp_path / "runs"), "--verbose", "0",
    ]  # fmt: skip
    rows = compare_members.main(argv)
    assert [r["member"] for r in rows] == ["plain", "fgsm", "gradalign"]
    for row in rows:
        assert row["setting"] == "mnist-collapse" and row["sigma"] == 0.4
        assert 0.0 <= row["robust_accuracy"] <= row["clean_accuracy"] <= 1.0
        assert len(row["held_pgd_accuracy"]) == 2  # one value per epoch
    table = (tmp_path / "runs" / "results.md").read_text()
    assert "| mnist-collapse (linf 0.4) | GradAlign | 1 |" in table
    assert "sigma ramped up over 2 epochs" in table
    histories = tmp_path / "runs" / "histories"
    fgsm = kg.plots.read_history(histories / "mnist-collapse-fgsm-seed0.csv")
    np.testing.assert_allclose(fgsm["sigma"], [0.2, 0.4], rtol=1e-6)  # the warmup
    plain = kg.plots.read_history(histories / "mnist-collapse-plain-seed0.csv")
    assert plain["sigma"] == [0.0, 0.0]
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 0
    assert_resumes(compare_members.main, argv, rows, "== mnist", capsys)
    assert_refuses(compare_members.main, [*argv, "--pgd-steps", "3"])
    with pytest.raises(SystemExit, match="2"):
        compare_members.main([*argv, "--warmup-epochs", "3"])
    assert "between 2 and --epochs (2). Received: 3" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        compare_members.main([*argv, "--warmup-epochs", "1"])  # no ramp in one epoch
    # Tabulating the finished runs trains nothing, and a missing run is left out.
    step_cost = tmp_path / "step_cost.json"
    step_cost.write_text(
        json.dumps([{"examples_per_s": {"plain": 100.0, "gradalign linf": 25.0}}])
    )
    finished = compare_members.main(
        [*argv, "--members", "plain", "gradalign", "n_fgsm", "--finished-only",
         "--step-cost", str(step_cost)]
    )  # fmt: skip
    assert finished == [rows[0], rows[2]]
    printed = capsys.readouterr().out
    assert "== mnist" not in printed
    assert "| GradAlign | 1 |" in printed and "| 4.00 |" in printed


def test_members_curves_give_each_member_one_colour_and_each_seed_one_style(
    tmp_path, monkeypatch
):
    """The study's plot: a member keeps its colour over seeds and settings,
    a seed its line style, and the legend names each once."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [
        {"setting": setting, "member": member, "seed": seed,
         "held_pgd_accuracy": [0.1 * seed, 0.5]}
        for setting in ("mnist", "fashion")
        for seed in (0, 1)
        for member in ("plain", "fgsm", "trades")
    ]  # fmt: skip
    drawn = []
    original = plt.Axes.plot

    def plot(ax, *args, **kwargs):
        drawn.append((kwargs["color"], kwargs["linestyle"]))
        return original(ax, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "plot", plot)
    labels = compare_members.curves(rows, tmp_path / "curves.png")
    assert labels == ["plain", "FGSM training", "TRADES", "seed 0", "seed 1"]
    assert (tmp_path / "curves.png").stat().st_size > 5000
    colours, styles = zip(*drawn)
    for i, row in enumerate(rows):
        same_member = [j for j, r in enumerate(rows) if r["member"] == row["member"]]
        assert all(colours[j] == colours[i] for j in same_member)
        same_seed = [j for j, r in enumerate(rows) if r["seed"] == row["seed"]]
        assert all(styles[j] == styles[i] for j in same_seed)
    assert len(set(colours)) == 3 and len(set(styles)) == 2


def test_train_once_reloads_a_finished_training_and_drops_a_stale_history(tmp_path):
    """A run killed while it is evaluated trains no second time, and a
    training that starts without a backup does not append to an older log."""
    from reproductions.run_records import train_once

    def model():
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        net.compile(optimizer="sgd", loss="mse")
        return net

    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    fits = []

    def fit(net):
        fits.append(net)
        net.fit(
            x, y, epochs=2, verbose=0,
            callbacks=[
                kg.callbacks.BackupAndRestore(
                    str(tmp_path / "backup"), delete_checkpoint=False
                ),
                keras.callbacks.CSVLogger(str(tmp_path / "history.csv"), append=True),
            ],
        )  # fmt: skip
        return {"seconds_per_epoch": 1.5}

    (tmp_path / "history.csv").write_text("epoch,loss\n0,9.0\n1,9.0\n")
    trained = model()
    assert train_once(trained, tmp_path, fit) == {"seconds_per_epoch": 1.5}
    assert len(kg.plots.read_history(tmp_path / "history.csv")["loss"]) == 2
    assert not (tmp_path / "backup").exists()  # removed once the weights are saved
    reloaded = model()
    assert train_once(reloaded, tmp_path, fit) == {"seconds_per_epoch": 1.5}
    assert fits == [trained]
    for a, b in zip(trained.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)
