"""Pictures: learning curves of a `fit` history."""

from __future__ import annotations

from pathlib import Path

from keras_gradreg.api_export import keras_gradreg_export

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (panel, keys), suffix in zip(_PANELS, ("loss", "accuracy", "grad_norm")):
        present = [k for k in keys if k in history and len(history[k])]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for key in present:
            epochs = range(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(suffix.replace("_", " "))
        ax.set_title(f"{title}: {panel}" if title else panel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(f"{path}_{suffix}.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written
