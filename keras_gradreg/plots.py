"""Pictures of training and robustness (needs matplotlib: the `plots`
extra)."""

from keras_gradreg.src.tools.plots import (
    plot_input_gradients,
    plot_learning_curves,
    plot_protocol_runs,
    plot_robust_accuracy,
    read_history,
)

__all__ = [
    "plot_input_gradients",
    "plot_learning_curves",
    "plot_protocol_runs",
    "plot_robust_accuracy",
    "read_history",
]
