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


def plot_confusion_matrix(matrix, class_names):
    """Rows normalised (each true class's predictions sum to 1), counts written in the cells."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(3.5, 0.45 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=90 if len(class_names) > 8 else 0)
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(class_names) <= 30:   # beyond, numbers would not fit in the cells
        for true in ticks:
            for guess in ticks:
                if counts[true, guess]:
                    axis.text(guess, true, f"{int(counts[true, guess])}", ha="center", va="center", fontsize=7,
                              color="white" if shares[true, guess] > 0.5 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    figure.tight_layout()
    return figure


def plot_top_losses(images, labels, probabilities, class_names):
    """The worst-predicted images (highest loss first), each titled predicted / true / probability of the prediction."""
    import numpy as np

    count = len(images)
    columns = min(4, max(count, 1))
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= count:
            axis.axis("off")
            continue
        image = np.clip(images[index], 0, 255).astype(np.uint8)
        axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        guess = int(np.argmax(probabilities[index]))
        axis.set_title(f"{class_names[guess]} / {class_names[labels[index]]}\n"
                       f"p={probabilities[index][guess]:.2f}", fontsize=8,
                       color="black" if guess == labels[index] else "firebrick")
    figure.suptitle("predicted / true, probability of the prediction", fontsize=9)
    figure.tight_layout()
    return figure


def plot_reliability(before, after, temperature):
    """Reliability diagrams: accuracy per confidence bin against the diagonal, before and after temperature scaling.

    `before` and `after` are `headstart.recipes.calibration.reliability` results.
    """
    import numpy as np

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
    for axis, diagram, title in ((axes[0], before, "before"), (axes[1], after, f"after (temperature {temperature:.2f})")):
        bins = len(diagram["counts"])
        centres = (np.arange(bins) + 0.5) / bins
        filled = diagram["counts"] > 0
        axis.bar(centres[filled], diagram["accuracy"][filled], width=1 / bins, edgecolor="black", alpha=0.7,
                 label="accuracy")
        axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_title(f"{title}: ECE {diagram['ece']:.3f}", fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure
