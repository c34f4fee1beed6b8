"""The pictures: what they draw, not how they look."""

import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.src.tools import plots


@pytest.fixture
def saved(monkeypatch):
    """The figure each plot saves, kept (under "fig") for its checks."""
    kept = {}
    save = plots._save

    def keep(fig, path):
        kept["fig"] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def test_protocol_runs_mark_the_best_epoch_and_the_target(tmp_path, saved):
    path = kg.plots.plot_protocol_runs(
        {
            "plain, seed 0": {
                "stage1": {"val_accuracy": [0.97, 0.99, 0.98]},
                "stage2": {"val_loss": [0.5, 0.02, 0.009]},
                "target": 0.01,
            }
        },
        tmp_path / "runs.png",
    )
    assert path.exists() and path.stat().st_size > 0
    first, second = saved["fig"].axes
    curve, best = first.get_lines()
    np.testing.assert_allclose(curve.get_ydata(), [3.0, 1.0, 2.0], atol=1e-9)
    assert best.get_xdata()[0] == 2  # the best epoch, marked
    assert best.get_ydata()[0] == pytest.approx(1.0)
    assert second.get_yscale() == "log"
    target = second.get_lines()[-1]
    assert list(target.get_ydata()) == [0.01, 0.01]  # the target line


def test_protocol_runs_scale_stage1_to_the_plateau_and_share_one_legend(
    tmp_path, saved
):
    runs = {  # CIFAR-like errors: 90% at first, 14% at best
        f"run {i}": {
            "stage1": {"val_accuracy": [0.1, 0.5, 0.86 - i / 100, 0.85]},
            "stage2": {"val_loss": [0.5, 0.4]},
            "target": None,
        }
        for i in range(3)
    }
    kg.plots.plot_protocol_runs(runs, tmp_path / "runs.png")
    fig = saved["fig"]
    first, second = fig.axes
    # Three times the lowest best error (14%): the best epochs show, the
    # first epoch's 90% is cut.
    assert first.get_ylim() == pytest.approx((0.0, 42.0))
    assert first.get_legend() is None and second.get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(runs)


def test_protocol_runs_draw_a_smoke_run_readably(tmp_path, saved):
    """A smoke run's stage 2 moves in the fourth digit: a log axis would
    label it with one tick (2.302 x 10^0), so it is linear (a decade or
    more stays log); its few epochs are ticked as whole epochs."""
    stage1 = {"val_accuracy": [0.1, 0.11]}
    narrow = {"stage1": stage1, "stage2": {"val_loss": [2.3026, 2.3024]}}
    kg.plots.plot_protocol_runs(
        {"smoke": {**narrow, "target": 2.302}}, tmp_path / "a.png"
    )
    assert saved["fig"].axes[1].get_yscale() == "linear"
    for ax in saved["fig"].axes:  # three epochs: whole-epoch ticks only
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
    wide = {"stage1": stage1, "stage2": {"val_loss": [0.3, 0.05]}, "target": 0.02}
    kg.plots.plot_protocol_runs({"run": wide}, tmp_path / "b.png")
    assert saved["fig"].axes[1].get_yscale() == "log"


def test_learning_curves_draw_each_key_against_whole_epochs(tmp_path, saved):
    history = {"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.8, 0.7], "other": [1]}
    (path,) = kg.plots.plot_learning_curves(history, tmp_path / "curves")
    assert path.name == "curves_loss.png" and path.exists()
    (ax,) = saved["fig"].axes
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "val_loss"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), history["val_loss"])
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_protocol_runs_without_a_stage2_draw_stage1_alone(tmp_path, saved):
    run = {"stage1": {"val_accuracy": [0.4, 0.5]}, "stage2": {"val_loss": []}}
    kg.plots.plot_protocol_runs({"40K run": run, "another": run}, tmp_path / "a.png")
    (first,) = saved["fig"].axes
    assert first.get_title().startswith("stage 1")
    run = {**run, "stage2": {}, "target": 0.1}  # a target alone is a stage 2
    kg.plots.plot_protocol_runs({"40K run": run}, tmp_path / "b.png")
    assert len(saved["fig"].axes) == 2


def test_protocol_runs_prefer_the_dropout_on_stage2_loss(tmp_path, saved):
    stage2 = {"val_loss": [0.004, 0.003], "val_noisy_loss": [0.05, 0.02]}
    kg.plots.plot_protocol_runs(
        {"l2": {"stage1": {"val_accuracy": [0.99]}, "stage2": stage2, "target": 0.03}},
        tmp_path / "runs.png",
    )
    second = saved["fig"].axes[1]
    curve = second.get_lines()[0]
    np.testing.assert_allclose(curve.get_ydata(), [0.05, 0.02])
    assert second.get_ylabel().startswith("dropout-on")


def test_read_history_gives_back_what_the_csv_logger_wrote(tmp_path):
    """`read_history` of a `CSVLogger` file equals `fit`'s own history;
    a file with no epochs yet reads as no columns."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", metrics=["mae"])
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 3)), rng.random((8, 2))
    logger = keras.callbacks.CSVLogger(str(tmp_path / "history.csv"))
    history = model.fit(
        x, y, epochs=3, validation_data=(x, y), callbacks=[logger], verbose=0
    ).history
    read = kg.plots.read_history(tmp_path / "history.csv")
    assert read["epoch"] == [0.0, 1.0, 2.0]
    assert set(read) == {"epoch", *history}
    for key, values in history.items():
        np.testing.assert_allclose(read[key], values, rtol=1e-6)
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    assert kg.plots.read_history(tmp_path / "empty.csv") == {}
    # Without validation data the logger writes "NA" in the val_ columns.
    logger = keras.callbacks.CSVLogger(str(tmp_path / "no_validation.csv"))
    history = model.fit(x, y, epochs=2, callbacks=[logger], verbose=0).history
    read = kg.plots.read_history(tmp_path / "no_validation.csv")
    assert "NA" in (tmp_path / "no_validation.csv").read_text()
    assert set(read) == {"epoch", *history}
