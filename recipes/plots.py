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


def plot_reconstructions(images, reconstructions):
    """Inputs on the top row, an autoencoder's reconstructions below."""
    count = len(images)
    figure, axes = plt.subplots(2, count, figsize=(1.2 * count, 2.6))
    for column in range(count):
        for row, batch in enumerate((images, reconstructions)):
            axis = axes[row, column]
            axis.imshow(batch[column].squeeze(), cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("rebuilt")
    figure.tight_layout()
    return figure


def plot_accuracy_vs_labels(budgets, accuracies):
    """Accuracy against labels per class, one line per way of starting (e.g. autoencoder, scratch)."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for label, values in accuracies.items():
        axis.plot(budgets, values, marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xticks(budgets)
    axis.set_xticklabels([str(budget) for budget in budgets])
    axis.set_xlabel("labelled images per class")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure
