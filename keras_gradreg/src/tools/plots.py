"""Pictures: learning curves, input gradients and worst-case perturbations,
and robust accuracy against eps. Every function saves PNGs (standalone
matplotlib figures, no display needed; the pyplot backend is untouched)
and returns their paths."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from keras_gradreg.src.api_export import keras_gradreg_export

# Panels of the learning-curve figure: (title, keys drawn on it).
_PANELS = (
    ("objective and its parts", ("loss", "clean_loss", "adv_loss", "val_loss")),
    ("accuracy", ("accuracy", "val_accuracy")),
    ("mean input-gradient norm ||dL/dx||_q", ("grad_norm",)),
)


@keras_gradreg_export("keras_gradreg.plots.plot_learning_curves")
def plot_learning_curves(history: dict, path, title: str = "") -> list[Path]:
    """Saves one PNG per panel of a `History.history` dict and returns their
    paths: `<path>_loss.png`, `<path>_accuracy.png`, `<path>_grad_norm.png`
    (a panel with none of its keys is skipped).

    Args:
        history: `model.fit(...).history` (keys -> per-epoch values).
        path: the path prefix, e.g. "runs/mnist/curves".
        title: a title prefix for every figure.
    """
    written = []
    for (panel, keys), suffix in zip(_PANELS, ("loss", "accuracy", "grad_norm")):
        present = [k for k in keys if k in history and len(history[k])]
        if not present:
            continue
        fig, ax = _subplots(figsize=(6, 4))
        for key in present:
            epochs = range(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        _whole_epochs(ax)
        ax.set_ylabel(suffix.replace("_", " "))
        ax.set_title(f"{title}: {panel}" if title else panel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, f"{path}_{suffix}.png"))
    return written


def _subplots(rows=None, columns=None, *, figsize):
    """A standalone `matplotlib.figure.Figure` and its axes: drawn without
    pyplot, so the user's plotting backend (a notebook's, say) is left
    alone and no global figure stays open. With `rows` and `columns` the
    axes come as a 2-D array; otherwise one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110)
    if rows is None:
        return fig, fig.subplots()
    return fig, fig.subplots(rows, columns, squeeze=False)


def _whole_epochs(ax) -> None:
    """Ticks `ax`'s x axis at whole epochs only (a short run's would read
    1.25, 1.50, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path) -> Path:
    """Writes `fig` to `path` (creating its folder) and returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _as_image(array, image_shape):
    """A 2-D (or RGB) picture of one example's flat or shaped array."""
    array = np.asarray(array, "float64")
    if image_shape is not None:
        array = array.reshape(image_shape)
    elif array.ndim == 1 and int(np.sqrt(array.size)) ** 2 == array.size:
        side = int(np.sqrt(array.size))
        array = array.reshape(side, side)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _signed_panel(fig, ax, image, title):
    """Draws a signed map with a colour scale centred at zero."""
    if image.ndim == 3:  # colour: show the channel sum, which keeps the sign
        image = image.sum(axis=-1)
    limit = float(np.abs(image).max()) or 1.0
    # Tiny or huge scales go into the title: a colour bar's offset text
    # ("1e-11") would overlap the panel above. A non-finite map (a diverged
    # model) is drawn as it is.
    exponent = int(np.floor(np.log10(limit))) if np.isfinite(limit) else 0
    if not -2 <= exponent <= 3:
        image, limit = image / 10.0**exponent, limit / 10.0**exponent
        title = f"{title} (x1e{exponent})"
    shown = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    colorbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=8)


@keras_gradreg_export("keras_gradreg.plots.plot_input_gradients")
def plot_input_gradients(
    models: dict,
    x,
    y,
    path,
    norms=("linf", "l2", "l1"),
    eps=None,
    *,
    image_shape=None,
    input_range=(0.0, 1.0),
    class_names=None,
) -> Path:
    """Saves a grid of, per model and example: the input, its input gradient
    dL/dx and the worst-case perturbation r* of each family member.

    One row per (model, example); columns: the input with its label and the
    model's prediction, dL/dx, then r* for each norm in `norms`. Signed maps
    use a red-blue scale centred at zero (red positive), each with its own
    colour bar. For linf, r* = eps * sign(g) and is the FGSM perturbation;
    for l1 it is concentrated on the pixel(s) of largest |g|.

    Args:
        models: label -> Keras classifier.
        x: a few inputs (say 3), in `input_range`.
        y: their integer labels.
        path: where to write the PNG.
        norms: the family members whose r* to draw.
        eps: radius per norm, a dict; default 1 for every norm (only the
            pattern matters: r* scales linearly with eps).
        image_shape: shape to view one example as (inferred for square
            flat inputs).
        input_range: the inputs' range, for the attacks' loss.
        class_names: optional names of the classes.

    Returns:
        The path of the PNG.
    """
    from keras_gradreg.src.evaluation.attacks import input_gradients
    from keras_gradreg.src.family.norms import canonical_norm, worst_case_perturbation

    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    norms = [canonical_norm(n) for n in norms]
    eps = {n: 1.0 for n in norms} | {
        canonical_norm(k): v for k, v in (eps or {}).items()
    }
    name = (lambda c: class_names[c]) if class_names else str
    rows, columns = len(models) * len(x), 2 + len(norms)
    fig, axes = _subplots(rows, columns, figsize=(2.0 * columns + 0.6, 1.9 * rows))
    row = 0
    for label, model in models.items():
        gradients = input_gradients(model, x, y, input_range=input_range)
        predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
        flat = gradients.reshape(len(x), -1)
        for i in range(len(x)):
            ax = axes[row, 0]
            image = _as_image(x[i], image_shape)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(
                f"label {name(y[i])}, predicted {name(predicted[i])}", fontsize=8
            )
            ax.set_ylabel(label, fontsize=8)
            _signed_panel(
                fig, axes[row, 1], _as_image(gradients[i], image_shape), "dL/dx"
            )
            for j, norm in enumerate(norms):
                r = worst_case_perturbation(flat[i : i + 1], norm, eps[norm])
                _signed_panel(
                    fig,
                    axes[row, 2 + j],
                    _as_image(np.asarray(r)[0], image_shape or x.shape[1:]),
                    f"r* ({norm}, eps={eps[norm]:g})",
                )
            row += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Input gradients and worst-case perturbations", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for it
    return _save(fig, path)


@keras_gradreg_export("keras_gradreg.plots.plot_robust_accuracy")
def plot_robust_accuracy(reports: dict, path, attack: str = "worst case") -> Path:
    """Saves robust accuracy against eps, one panel per norm and one line
    per model (eps = 0 is the clean accuracy).

    Args:
        reports: label -> `RobustnessReport` (from `evaluate_robustness`).
        path: where to write the PNG.
        attack: which attack's rows to draw; default the worst case.

    Returns:
        The path of the PNG.
    """
    norms = list(
        dict.fromkeys(r["norm"] for report in reports.values() for r in report.rows)
    )
    fig, axes = _subplots(1, len(norms), figsize=(4.2 * len(norms), 3.6))
    for ax, norm in zip(axes[0], norms):
        for label, report in reports.items():
            points = sorted(
                (r["eps"], r["accuracy"])
                for r in report.rows
                if r["norm"] == norm and r["attack"] == attack
            )
            eps = [0.0] + [e for e, _ in points]
            accuracy = [report.clean_accuracy] + [a for _, a in points]
            ax.plot(eps, accuracy, marker="o", markersize=4, label=label)
        ax.set_title(f"{norm} perturbations ({attack})", fontsize=10)
        ax.set_xlabel("eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


@keras_gradreg_export("keras_gradreg.plots.read_history")
def read_history(path) -> dict:
    """A `keras.callbacks.CSVLogger` file as the dict the plots take: each
    column's name -> its per-epoch values (floats), like `History.history`.

    Args:
        path: the CSV file.

    Returns:
        The columns; `{}` for a file with no epochs yet. The logger writes
        "NA" where an epoch has no value (the `val_` columns of a `fit`
        without validation data): such a value reads as NaN, and a column
        of nothing else is left out, as `History.history` leaves it out.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {
        key: [math.nan if row[key] == "NA" else float(row[key]) for row in rows]
        for key in (rows[0] if rows else {})
    }
    return {
        key: values
        for key, values in columns.items()
        if not all(row[key] == "NA" for row in rows)
    }


def _loss_scale(values) -> str:
    """The scale of stage 2's loss axis: log for losses spanning a decade or
    more (a real stage 2 falls that far), linear for a narrow range, which a
    log axis labels poorly."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() >= 10.0 * values.min():
        return "log"
    return "linear"


@keras_gradreg_export("keras_gradreg.plots.plot_protocol_runs")
def plot_protocol_runs(runs: dict, path) -> Path:
    """Saves the two stages of `protocol.train_then_continue` runs side by
    side: stage 1's validation error against the epoch, with the best epoch
    marked (early stopping keeps that model), and stage 2's loss on the
    former validation images falling to the target (the best model's
    training loss), where the run stops: `val_noisy_loss` (dropout on) when
    the history has it, otherwise `val_loss`, on a log axis when the losses
    span a decade or more. Stage 1's axis reaches three
    times the lowest best error (at least one point above it), so the
    plateaus the runs differ on are not squashed by the first epochs; one
    legend under both panels names the runs. When no run has a stage 2 (no
    losses and no target: Table III's 40K runs), stage 1's panel is drawn
    alone.

    Args:
        runs: label -> `{"stage1": history, "stage2": history, "target":
            float}`, each history a dict of per-epoch lists with at least
            `val_accuracy` (stage 1) and `val_noisy_loss` or `val_loss`
            (stage 2), as
            `History.history` or the run's `history.csv` read into columns.
        path: where to write the PNG.

    Returns:
        The path of the PNG.
    """
    # One legend for both panels, below them, so it hides no curve.
    legend_rows = -(-len(runs) // 2)
    legend_height = 0.16 * legend_rows + 0.05
    with_stage2 = any(
        run.get("target") is not None or any(len(v) for v in run["stage2"].values())
        for run in runs.values()
    )
    fig, axes = _subplots(
        1, 2 if with_stage2 else 1,
        figsize=(10 if with_stage2 else 5.5, 3.8 + legend_height),
    )  # fmt: skip
    first = axes[0][0]
    second = axes[0][1] if with_stage2 else None
    noisy = False
    bests, losses = [], []
    for color, (label, run) in enumerate(runs.items()):
        style = {"color": f"C{color}", "linewidth": 1}
        error = 100.0 * (1.0 - np.asarray(run["stage1"]["val_accuracy"], float))
        epochs = np.arange(1, len(error) + 1)
        first.plot(epochs, error, label=label, **style)
        best = int(np.argmin(error))
        bests.append(error[best])
        first.plot(epochs[best], error[best], "o", color=f"C{color}")
        if second is None:
            continue
        stage2 = run["stage2"]
        key = "val_noisy_loss" if "val_noisy_loss" in stage2 else "val_loss"
        noisy |= key == "val_noisy_loss"
        loss = np.asarray(stage2.get(key, []), float)
        second.plot(np.arange(1, len(loss) + 1), loss, **style)
        losses += list(loss)
        if run.get("target") is not None:
            second.axhline(run["target"], linestyle="--", **style)
            losses.append(run["target"])
    first.set_title("stage 1: validation error (dot: best epoch)", fontsize=10)
    first.set_xlabel("epoch")
    first.set_ylabel("validation error (%)")
    if bests:
        # The first epochs' errors would squash the plateau the runs differ on.
        lowest = min(bests)
        first.set_ylim(0.0, min(first.get_ylim()[1], max(3.0 * lowest, lowest + 1.0)))
    if second is not None:
        second.set_title("stage 2: loss on the former validation images", fontsize=10)
        second.set_xlabel("epoch of stage 2")
        second.set_ylabel(("dropout-on " if noisy else "") + "loss (dashed: target)")
        second.set_yscale(_loss_scale(losses))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        _whole_epochs(ax)
    fig.legend(
        *first.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7,
        frameon=False,
    )  # fmt: skip
    fig.tight_layout(rect=(0.0, legend_height / (3.8 + legend_height), 1.0, 1.0))
    return _save(fig, path)
