"""Figures a recipe writes into its run directory."""

import matplotlib

matplotlib.use("Agg")  # headless: recipes run on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history, phases=()):
    """Loss and accuracy per epoch, train and validation, with phase boundaries marked.

    Args:
        history: one dict per epoch with "epoch" and logged metrics ("loss", "val_loss", ...).
        phases: dicts with "name" and "first_epoch"; a dashed line marks where each
            phase after the first begins.
    """
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [row["epoch"] for row in history]
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = [row.get(key) for row in history]
            if any(value is not None for value in values):
                axis.plot(epochs, values, style, marker="o", markersize=3, label=key)
        for phase in list(phases)[1:]:
            boundary = phase["first_epoch"] - 0.5
            axis.axvline(boundary, color="grey", linestyle=":", linewidth=1)
            axis.text(boundary, 1.0, f" {phase['name']}", transform=axis.get_xaxis_transform(),
                      va="top", fontsize=8, color="grey")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
