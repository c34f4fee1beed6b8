"""evaluate_robustness, its masking checks, the RobustAccuracy callback, the
robustness pictures and the `evaluate` command."""

import json
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
from keras import ops

import keras_gradreg as kg
from keras_gradreg.src.tools import cli
from tests.helpers import write_fake_mnist


def _identity_classifier():
    """Predicts the arg-max coordinate of a 2-vector."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    return model


class _Swap:
    """A fake attack that swaps the two coordinates of chosen examples (so
    the identity classifier flips its prediction on exactly those)."""

    def __init__(self, name, fooled):
        self.name, self.fooled = name, np.asarray(fooled)

    def __call__(self, model, x, y, norm, eps, **kwargs):
        x_adv = x.copy()
        x_adv[self.fooled] = x[self.fooled][:, ::-1]
        return x_adv


def test_worst_case_counts_a_point_only_if_it_survives_every_attack():
    model = _identity_classifier()
    x = np.array([[0.9, 0.1]] * 6 + [[0.2, 0.8]] * 4, "float32")
    y = np.array([0] * 6 + [1] * 3 + [0])  # the last one is wrong when clean
    attacks = [_Swap("A", [0, 1, 9]), _Swap("B", [1, 2, 3])]
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.1], attacks, checks=False, verbose=0
    )
    assert report.clean_accuracy == pytest.approx(0.9)
    assert report.accuracy("linf", 0.1, "A") == pytest.approx(0.7)
    assert report.accuracy("linf", 0.1, "B") == pytest.approx(0.6)
    # Survivors of both: 4, 5, 6, 7, 8 (9 was never correct).
    assert report.accuracy("linf", 0.1) == pytest.approx(0.5)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {row["attack"] for row in data["rows"]} == {"A", "B", "worst case"}
    table = report.to_markdown()
    assert "| linf | 0.1 | 70.00% | 60.00% | 50.00% |" in table
    with pytest.raises(KeyError):
        report.accuracy("l2", 0.1)


def test_each_attack_row_says_how_many_points_it_ran_on_and_for_how_long():
    model = _identity_classifier()
    x = np.array([[0.9, 0.1]] * 6 + [[0.2, 0.8]] * 4, "float32")
    y = np.array([0] * 6 + [1] * 3 + [0])  # 9 correct when clean
    # In a cascade each attack sees only the points still robust: A breaks
    # the first two of the 9 it gets, B the first of the 7 left.
    attacks = [_Swap("A", [0, 1]), _Swap("B", [0])]
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.1], attacks, cascade=True, checks=False, verbose=0
    )
    rows = {row["attack"]: row for row in report.rows}
    assert (rows["A"]["attacked"], rows["B"]["attacked"]) == (9, 7)
    assert rows["B"]["accuracy"] == pytest.approx(0.6)
    assert all(0 <= rows[a]["seconds"] < 60 for a in "AB")
    assert "attacked" not in rows["worst case"]
    again = kg.RobustnessReport.from_json(report.to_json())
    assert again.rows == report.rows


def test_real_attacks_on_a_linear_model_give_a_clean_report():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    x = rng.uniform(0, 1, (120, 8)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kg.GradientMaskingWarning)
        report = kg.evaluate_robustness(
            model, x, y, ["linf", "l2"], {"linf": [0.02, 0.1], "l2": [0.1]}, "fast",
            verbose=0,
        )  # fmt: skip
    assert report.warnings == []
    assert "upper bound" in report.suite and "upper bound" in report.to_markdown()
    assert report.clean_accuracy == 1.0
    for norm, eps in (("linf", 0.02), ("linf", 0.1), ("l2", 0.1)):
        worst = report.accuracy(norm, eps)
        assert worst <= min(
            report.accuracy(norm, eps, "FGM"), report.accuracy(norm, eps, "PGD-20")
        )
    assert report.accuracy("linf", 0.1) <= report.accuracy("linf", 0.02)


def test_the_standard_suite_is_the_default_and_names_itself():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    x = rng.uniform(0, 1, (40, 8)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.05], verbose=0, image_shape=(2, 4)
    )
    attacks = [row["attack"] for row in report.rows]
    # AutoAttack's standard version: FAB-T after APGD-T, before Square.
    assert attacks == ["APGD-CE", "APGD-T", "FAB-T", "Square", "worst case"]
    caption = (
        "standard suite (AutoAttack's standard version: APGD-CE, APGD-T, FAB-T, Square)"
    )
    assert f"Robust accuracy under the {caption}, keras_gradreg {kg.__version__}." in (
        report.to_markdown()
    )
    assert "upper bound" not in report.to_markdown()
    assert report.suite_name == "standard" and report.version == kg.__version__


class _Quantize(keras.layers.Layer):
    """Rounds its inputs with no gradient: a textbook masking defence."""

    def call(self, inputs):
        return ops.stop_gradient(ops.round(inputs * 4.0) / 4.0)


def test_masked_gradients_are_reported():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            _Quantize(),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (60, 8)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    with pytest.warns(kg.GradientMaskingWarning, match="exactly-zero input gradient"):
        report = kg.evaluate_robustness(
            model, x, y, ["linf"], [0.05], ["fgm"], verbose=0
        )
    assert any("100.0% of the examples" in w for w in report.warnings)
    assert "Gradient-masking checks that failed" in report.to_markdown()


def test_bad_evaluation_arguments():
    model = _identity_classifier()
    x, y = np.full((2, 2), 0.5, "float32"), np.zeros(2, "int32")
    with pytest.raises(ValueError, match="deepfool"):
        kg.evaluate_robustness(model, x, y, attacks=["deepfool"], verbose=0)
    with pytest.raises(ValueError, match="no radii for norm"):
        kg.evaluate_robustness(model, x, y, ["l2"], {"linf": [0.1]}, verbose=0)
    with pytest.raises(ValueError, match="pass `eps_values`"):
        kg.evaluate_robustness(model, x, y, [3.0], verbose=0)


def _small_classifier():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = kg.GradRegModel(inputs, outputs, norm="l2", sigma=0.1)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def test_robust_accuracy_callback_feeds_early_stopping_and_csv(
    tmp_path, classification_data
):
    x, y = classification_data
    model = _small_classifier()
    callback = kg.callbacks.RobustAccuracy(
        (x, y), attack="fgm", eps=0.05, subset_size=32
    )
    history = model.fit(
        x, y, epochs=3, batch_size=16, verbose=0,
        callbacks=[
            callback,
            keras.callbacks.EarlyStopping("val_robust_accuracy", mode="max", patience=5),
            keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        ],
    ).history  # fmt: skip
    values = history["val_robust_accuracy"]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    # The last logged value is the robust accuracy of the final weights.
    assert values[-1] == pytest.approx(callback.robust_accuracy())
    subset_x = callback.x
    clean = kg.attacks.correct_predictions(model, subset_x, callback.y)
    adversarial = kg.attacks.correct_predictions(
        model, kg.fgm(model, subset_x, callback.y, "linf", 0.05), callback.y
    )
    assert values[-1] == pytest.approx(np.mean(clean & adversarial))
    assert "val_robust_accuracy" in (tmp_path / "log.csv").read_text().splitlines()[0]


def test_robust_accuracy_every_k_carries_the_last_value_for_monitors(
    tmp_path, classification_data
):
    """Skipped epochs log the last measured value, never NaN: EarlyStopping
    and ModelCheckpoint then compare real scores."""
    x, y = classification_data
    model = _small_classifier()
    callback = kg.callbacks.RobustAccuracy((x, y), attack="fgm", eps=0.05, every=2)
    measured = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: measured.append(callback.last_measured_epoch)
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.keras"), "val_robust_accuracy", mode="max",
        save_best_only=True,
    )  # fmt: skip
    history = model.fit(
        x, y, epochs=5, batch_size=16, verbose=0,
        callbacks=[callback, probe, checkpoint],
    ).history  # fmt: skip
    values = history["val_robust_accuracy"]
    assert all(np.isfinite(values))
    assert measured == [0, 0, 2, 2, 4]
    assert values[1] == values[0] and values[3] == values[2]
    assert checkpoint.best == max(values)


def test_robust_accuracy_runs_a_list_of_attacks_as_a_cascade(classification_data):
    x, y = classification_data
    model = _small_classifier()
    pgd = kg.attacks.PGD(steps=5)
    callback = kg.callbacks.RobustAccuracy((x, y), attack=["fgm", pgd], eps=0.2)
    callback.set_model(model)
    # FGM on every point classified correctly, PGD on those FGM left.
    robust = kg.attacks.correct_predictions(model, callback.x, callback.y)
    x_fgm = kg.fgm(model, callback.x[robust], callback.y[robust], "linf", 0.2)
    robust[robust] = kg.attacks.correct_predictions(model, x_fgm, callback.y[robust])
    x_pgd = pgd(model, callback.x[robust], callback.y[robust], "linf", 0.2, seed=0)
    robust[robust] = kg.attacks.correct_predictions(model, x_pgd, callback.y[robust])
    assert callback.robust_accuracy() == pytest.approx(np.mean(robust))
    assert kg.callbacks.RobustAccuracy((x, y)).attack.name == "PGD-10"


def test_robust_accuracy_runs_a_named_suite_as_evaluate_robustness(
    classification_data,
):
    """A suite's name ("standard", "standard-no-fab", "rand", "fast") runs
    `evaluate_robustness`'s suite: its attacks for the norm, its draws."""
    x, y = classification_data
    model = _small_classifier()
    callback = kg.callbacks.RobustAccuracy((x, y), "fast", eps=0.2, subset_size=40)
    callback.set_model(model)
    report = kg.evaluate_robustness(
        model, callback.x, callback.y, ["linf"], [0.2], "fast", checks=False,
        verbose=0,
    )  # fmt: skip
    assert report.accuracy("linf", 0.2) < report.clean_accuracy
    assert callback.robust_accuracy() == report.accuracy("linf", 0.2)
    for suite in ("standard", "standard-no-fab", "rand"):
        assert kg.callbacks.RobustAccuracy((x, y), suite).suite == suite


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"attack": []}, "attack=\\[\\]"),
        ({"eps": -1.0}, "eps=-1.0"),
        ({"subset_size": 0}, "subset_size=0"),
        ({"every": 0}, "every=0"),
        ({"validation_data": np.zeros(3)}, "validation_data"),
        ({"attack": "cw"}, "Received: 'cw'"),
        ({"image_shape": (2, 1)}, "image_shape=\\(2, 1\\) with attack='pgd'"),
    ],
)
def test_bad_callback_arguments(kwargs, message):
    args = {"validation_data": (np.zeros((4, 2)), np.zeros(4, "int32"))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kg.callbacks.RobustAccuracy(**args)


def test_pictures_are_written(tmp_path, classification_data):
    x, y = classification_data
    model = _small_classifier()
    report = kg.evaluate_robustness(
        model, x, y, ["linf"], [0.05, 0.1], ["fgm"], checks=False, verbose=0
    )
    curve = kg.plots.plot_robust_accuracy({"l2 penalty": report}, tmp_path / "c.png")
    grid = kg.plots.plot_input_gradients(
        {"a": model, "b": model}, x[:2], y[:2], tmp_path / "g.png", image_shape=(2, 3)
    )
    assert matplotlib.image.imread(curve).shape[1] > 300
    height, width = matplotlib.image.imread(grid).shape[:2]
    assert height > width / 3  # four rows of panels


def test_pictures_leave_the_pyplot_backend_and_figures_alone(tmp_path):
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    open_figures = plt.get_fignums()
    kg.plots.plot_learning_curves({"loss": [1.0, 0.5]}, tmp_path / "curves")
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == open_figures


@pytest.mark.parametrize(
    "scale, title", [(3e-11, "dL/dx (x1e-11)"), (0.5, "dL/dx"), (2e5, "dL/dx (x1e5)")]
)
def test_signed_panels_put_extreme_scales_in_the_title(scale, title):
    """A colour bar's offset text ("1e-11") would overlap the panel above:
    extreme scales are divided out and named in the title instead."""
    from keras_gradreg.src.tools.plots import _signed_panel, _subplots

    fig, ax = _subplots(figsize=(3, 3))
    image = scale * np.array([[1.0, -0.5], [0.25, 0.0]])
    _signed_panel(fig, ax, image, "dL/dx")
    assert ax.get_title() == title
    shown = ax.get_images()[0]
    low, high = shown.get_clim()
    assert low == -high
    if title != "dL/dx":  # divided by the named power of ten
        assert 1.0 <= high < 10.0
    np.testing.assert_allclose(shown.get_array() / high, image / np.abs(image).max())


def test_signed_panels_draw_non_finite_maps():
    """A diverged model's NaN gradients still get a panel, unscaled."""
    from keras_gradreg.src.tools.plots import _signed_panel, _subplots

    fig, ax = _subplots(figsize=(3, 3))
    _signed_panel(fig, ax, np.array([[np.nan, 1e-11]]), "dL/dx")
    assert ax.get_title() == "dL/dx"


def test_evaluate_command_writes_report_json_and_pictures(tmp_path, capsys):
    write_fake_mnist(tmp_path / "data", n=32, n_test=32)
    model = kg.models.mnist_maxout_mlp(units=8, pieces=2, sigma=0.0)
    model.compile(loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "model.keras")
    out = tmp_path / "eval"
    code = cli.main([
        "evaluate", "--model-path", str(tmp_path / "model.keras"),
        "--data-dir", str(tmp_path / "data"), "--limit", "16",
        "--norms", "linf", "l2", "--linf-eps", "0.1", "--l2-eps", "1", "2",
        "--attacks", "fast", "--steps", "3", "--examples", "2", "--noise-stds", "0.1", "0.3",
        "--noise-draws", "2", "--output", str(out),
    ])  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    assert "| linf | 0.1 | " in report and "| l2 | 2 | " in report
    assert "PGD-3" in report and "![robust accuracy" in report
    assert "| noise std | clipped to [0, 1] | not clipped |" in report
    assert "| 0.3 | " in report and "over 2 draws" in report
    results = json.loads((out / "robustness.json").read_text())
    assert results["report"]["num_examples"] == 16
    noise = results["report"]["noise"]
    assert [(r["std"], r["clip"]) for r in noise] == [
        (0.1, [0.0, 1.0]), (0.1, None), (0.3, [0.0, 1.0]), (0.3, None),
    ]  # fmt: skip
    assert all(len(r["draws"]) == 2 for r in noise)
    assert (out / "gradients.png").stat().st_size > 5000
    assert (out / "robust_accuracy.png").stat().st_size > 5000
    assert "worst case" in capsys.readouterr().out


def test_evaluate_command_errors_in_one_line(tmp_path, capsys):
    code = cli.main(
        ["evaluate", "--model-path", str(tmp_path / "missing.keras"), "--output", "x"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.keras" in err[0]


def _regression_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_non_classifiers_are_refused_and_sigmoid_binary_classifiers_scored():
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype("float32")
    regression = _regression_model()
    regression.set_weights([np.full((4, 1), 3.0, "float32"), np.zeros(1, "float32")])
    with pytest.raises(ValueError, match="regression"):
        kg.evaluate_robustness(regression, x, np.zeros(64, "int32"), ["linf"], [0.1])
    # A one-unit sigmoid classifier: p(class 1) = sigmoid(w . x + b).
    inputs = keras.Input((4,))
    binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    w = np.array([[2.0], [-1.0], [0.5], [1.0]], "float32")
    binary.set_weights([w, np.array([-1.2], "float32")])
    logit = x @ w[:, 0] - 1.2
    y = (logit > 0).astype("int32")
    assert kg.classification_accuracy(binary, x, y) == 1.0
    eps = 0.1
    report = kg.evaluate_robustness(
        binary, x, y, ["linf"], [eps], ["fgm", "pgd"], checks=False, verbose=0
    )
    # Linear model: the worst linf move pushes each coordinate by eps against
    # the true class, clipped to [0, 1]; it flips the point iff that crosses 0.
    direction = np.where(y == 1, -1.0, 1.0)[:, None] * np.sign(w[:, 0])[None, :]
    x_worst = np.clip(x + eps * direction, 0.0, 1.0)
    robust = ((x_worst @ w[:, 0] - 1.2) > 0) == (y == 1)
    assert report.accuracy("linf", eps) == pytest.approx(robust.mean())
    assert 0 < report.accuracy("linf", eps) < 1


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.full((4, 4), np.nan, "float32"), np.zeros(4, "int32"), "finite"),
        (np.zeros((4, 4), "float32"), np.eye(4, 3, dtype="int32"), "one-hot"),
        (np.zeros((4, 4), "float32"), np.zeros(3, "int32"), "len"),
        (np.zeros((0, 4), "float32"), np.zeros(0, "int32"), "at least one"),
        ({"a": np.zeros((4, 4), "float32")}, np.zeros(4, "int32"), "dict"),
    ],
)
def test_evaluation_refuses_bad_data_clearly(x, y, message):
    model = _small_classifier()
    with pytest.raises(ValueError, match=message):
        kg.evaluate_robustness(model, x, y, ["linf"], [0.1], verbose=0)
    if message not in ("at least one",):
        with pytest.raises(ValueError, match=message):
            kg.fgm(model, x, y, "linf", 0.1)


def test_pgd_accepts_numpy_step_sizes(classification_data):
    x, y = classification_data
    model = _small_classifier()
    x_adv = kg.pgd(model, x, y, "linf", 0.1, steps=2, step_size=np.float32(0.05))
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
