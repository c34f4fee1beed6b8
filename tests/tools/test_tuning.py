"""The KerasTuner hypermodel: search space, objectives, a real two-trial
search per backend, and examples/tune_mnist.py end to end."""

import keras
import keras_tuner
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.tools import tuning
from tests.helpers import import_example, on_one_backend, requires_mnist


def _small_model(hp):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(hp.Int("units", 4, 8, step=4), activation="relu")(
        inputs
    )
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    return kg.GradRegModel(inputs, outputs)


def test_default_search_space():
    hypermodel = tuning.GradRegHyperModel(_small_model, input_shape=(6,))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert list(space["norm"].values) == ["linf", "l2", "l1"]
    assert {"sigma_linf", "sigma_l2", "sigma_l1"} <= set(space)
    linf, l2 = space["sigma_linf"], space["sigma_l2"]
    assert (linf.min_value, linf.max_value, linf.sampling) == (0.003, 0.3, "log")
    # l2/l1 ranges scale with sqrt(dimension / 784).
    assert l2.max_value == pytest.approx(3.0 * np.sqrt(6 / 784))
    assert type(space["form"]).__name__ == "Fixed"
    assert model.regularizer == tuning.GradRegHyperModel(
        _small_model, input_shape=(6,)
    ).regularizer(hp)
    assert model.regularizer.norm == "linf" and model.optimizer is not None


def test_overrides_and_fixed_values():
    hypermodel = tuning.GradRegHyperModel(
        _small_model,
        norms=("l2", "l1"),
        sigma_ranges={"l2": (0.5, 5.0)},
        forms=("penalty", "perturb"),
        alpha=(0.0, 0.5),
        learning_rate=(1e-4, 1e-2),
        fixed={"form": "perturb", "sigma_l1": 7.0},
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert list(space["norm"].values) == ["l2", "l1"]
    assert (space["sigma_l2"].min_value, space["sigma_l2"].max_value) == (0.5, 5.0)
    assert space["form"].value == "perturb" and space["sigma_l1"].value == 7.0
    assert space["alpha"].max_value == 0.5
    assert space["learning_rate"].sampling == "log"
    hp = keras_tuner.HyperParameters()
    hp.Fixed("norm", "l1")  # as a trial that drew l1 would have it
    regularizer = hypermodel.regularizer(hp)
    assert (regularizer.norm, regularizer.sigma, regularizer.form.name) == (
        "l1",
        7.0,
        "perturb",
    )
    fixed = tuning.GradRegHyperModel(_small_model, fixed={"norm": "l2", "sigma": 0.3})
    hp = keras_tuner.HyperParameters()
    assert fixed.build(hp).regularizer.sigma == 0.3
    assert [p.name for p in hp.space if p.name.startswith("sigma")] == ["sigma_l2"]


def test_every_form_is_in_the_search_space():
    hypermodel = tuning.GradRegHyperModel(_small_model, forms=kg.FORMS)
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    assert list({p.name: p for p in hp.space}["form"].values) == list(kg.FORMS)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("form", "multistep")  # as a trial that drew it would have it
    assert hypermodel.build(hp).regularizer.form.name == "multistep"


def test_build_keeps_the_models_other_regularizer_settings():
    """The search sets norm, sigma, form, alpha and the input range; what
    `build_model` chose besides (here multistep steps, a feature mask and
    the semi-supervised layout) survives."""

    def configured(hp):
        inputs = keras.Input((6,))
        outputs = keras.layers.Dense(3)(inputs)
        return kg.GradRegModel(
            inputs,
            outputs,
            form="multistep",
            steps=3,
            feature_mask=0.5,
            labeled_rows=4,
        )

    hypermodel = tuning.GradRegHyperModel(
        configured, forms=("multistep",), fixed={"norm": "l2", "sigma": 0.2}
    )
    regularizer = hypermodel.build(keras_tuner.HyperParameters()).regularizer
    assert (regularizer.norm, regularizer.sigma, regularizer.form.name) == (
        "l2", 0.2, "multistep",
    )  # fmt: skip
    assert regularizer.input_range == (0.0, 1.0)
    assert (regularizer.steps, regularizer.labeled_rows) == (3, 4)
    assert np.asarray(regularizer.feature_mask) == 0.5


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"norms": ("l3",)}, "norm='l3'"),
        ({"sigma_ranges": {"linf": (0.0, 1.0)}}, "0 < min < max"),
        ({"forms": ("exact",)}, "forms=\\('exact',\\)"),
        ({"fixed": {"width": 3}}, "width"),
        ({"build_model": None}, "build_model=None"),
    ],
)
def test_bad_hypermodel_arguments(kwargs, message):
    args = {"build_model": _small_model}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        tuning.GradRegHyperModel(**args)


def test_objective_names_resolve():
    for name, direction in tuning.OBJECTIVES.items():
        objective = tuning.objective(name)
        assert (objective.name, objective.direction) == (name, direction)
    with pytest.raises(ValueError, match="objective='val_f1'"):
        tuning.objective("val_f1")


class _Recording(tuning.GradRegHyperModel):
    """Records the regularizer of every model a trial actually trains."""

    seen = []

    def fit(self, hp, model, *args, **kwargs):
        self.seen.append((dict(hp.values), model.regularizer))
        return super().fit(hp, model, *args, **kwargs)


def test_two_trial_search_trains_each_trials_regularizer(tmp_path, classification_data):
    x, y = classification_data
    hypermodel = _Recording(_small_model, input_shape=(6,), robust_subset=16)
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective=tuning.objective("val_robust_score"),
        max_trials=2,
        directory=str(tmp_path),
        project_name="search",
        seed=3,
    )
    tuner.search(x, y, epochs=1, batch_size=16, validation_data=(x, y), verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and len(_Recording.seen) == 2
    for values, regularizer in _Recording.seen:
        norm = values["norm"]
        assert regularizer.norm == norm
        assert regularizer.sigma == pytest.approx(values[f"sigma_{norm}"])
        assert regularizer.form.name == values["form"]
    for trial in trials:
        row = tuning.describe_trial(trial)
        assert 0.0 <= row["val_robust_accuracy"] <= 1.0
        expected = 0.5 * (row["val_accuracy"] + row["val_robust_accuracy"])
        assert row["score"] == pytest.approx(expected)
    best = hypermodel.build(tuner.get_best_hyperparameters(1)[0])
    assert best.regularizer.norm == tuner.get_best_hyperparameters(1)[0]["norm"]


def test_robust_objective_without_validation_data_is_a_clear_error(classification_data):
    x, y = classification_data
    hypermodel = tuning.GradRegHyperModel(_small_model)
    hp = keras_tuner.HyperParameters()
    with pytest.raises(ValueError, match="validation_data=None"):
        hypermodel.fit(hp, hypermodel.build(hp), x, y, epochs=1, verbose=0)


@pytest.mark.slow
@requires_mnist
@on_one_backend("the hypermodel and a two-trial search, above", "torch")
def test_tune_mnist_runs_end_to_end_and_resumes(tmp_path, capsys):
    tune_mnist = import_example("tune_mnist")
    argv = [
        "--trials", "2", "--epochs", "1", "--final-epochs", "1", "--limit", "300",
        "--output", str(tmp_path), "--verbose", "0", "--standard-suite",
        "--standard-points", "16",
    ]  # fmt: skip
    summary = tune_mnist.main(argv)
    out = capsys.readouterr().out
    assert "| trial | norm | sigma |" in out and "Best:" in out
    assert len(summary["leaderboard"]) == 2
    assert 0.0 <= summary["test_robust_accuracy"] <= summary["test_accuracy"]
    standard = summary["standard"]
    assert standard["points"] == 16
    assert standard["worst case"] == standard["Square"] <= standard["APGD-CE"]
    assert (tmp_path / "best_model.keras").exists()
    assert (tmp_path / "summary.json").exists()
    # A second run resumes the finished search instead of repeating it.
    again = tune_mnist.main(argv)
    assert [r["trial"] for r in again["leaderboard"]] == [
        r["trial"] for r in summary["leaderboard"]
    ]
    assert again["best_hyperparameters"] == summary["best_hyperparameters"]


@pytest.mark.parametrize("validation_kind", ["arrays", "batches"])
def test_robust_objective_with_batched_validation_and_no_metrics(
    tmp_path, validation_kind
):
    """A tf.data-style iterable validation set and `metrics=()` still give a
    finite val_robust_score (clean accuracy is measured by the callback)."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    validation = (x[:32], y[:32])
    if validation_kind == "batches":
        batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
        validation = batches  # an iterable of (x, y) batches, as a dataset is
    hypermodel = tuning.GradRegHyperModel(
        _small_model, metrics=(), robust_subset=32, input_shape=(6,)
    )
    callbacks = hypermodel.robust_callbacks(validation)
    model = hypermodel.build(keras_tuner.HyperParameters())
    logs = model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks).history
    assert np.isfinite(logs["val_robust_score"][0])
    robust = callbacks[0]
    clean = kg.classification_accuracy(model, robust.x, robust.y)
    assert logs["val_robust_score"][0] == pytest.approx(
        0.5 * (clean + logs["val_robust_accuracy"][0])
    )
