"""The gradient log that `GradientLogger` writes: its columns, reading it, and plotting it.

The log is a CSV file with one row per trainable variable per logged step:

    step,epoch,layer,variable,grad_norm,weight_norm,update_norm,update_ratio
    0,0,backbone/conv1,kernel,0.8125,4.2031,0.0081,0.0019

`layer` is the path of the layer that owns the variable ("backbone/stage1_block1_conv1" in a
model with a "backbone" sub-model); norms are L2 norms; `update_norm` is the norm of the
change the optimizer applied (weights after minus weights before the step) and
`update_ratio` is `update_norm / weight_norm` (about 1e-3 is the usual healthy value).

This module does not import Keras or TensorFlow, so plotting a log takes a second:

    from headstart.callbacks.gradient_log import plot_gradient_log
    plot_gradient_log("runs/cifar/gradients.csv", "runs/cifar/gradients.png")
"""

import csv
import math
import os

COLUMNS = ("step", "epoch", "layer", "variable", "grad_norm", "weight_norm", "update_norm", "update_ratio")
HEALTHY_UPDATE_RATIO = 1e-3


def read_gradient_log(path):
    """The rows of a gradient log, as dicts with the types of `COLUMNS`.

    A last line cut short (the run was killed while appending) is skipped.

    Args:
        path: The CSV file written by `GradientLogger`.

    Returns:
        A list of dicts, in file order.

    Raises:
        FileNotFoundError: There is no file at `path`.
        ValueError: The file is not a gradient log (wrong header).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No gradient log at {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        if not _has_log_header(next(reader, None), path):
            return []
        rows = []
        for fields in reader:
            try:
                rows.append(_parse_row(fields))
            except ValueError:
                continue  # a line cut short by an interrupted append
        return rows


def last_logged_step(path):
    """The step of the last complete row of a gradient log, or `None` if it has no rows.

    Reads only the first line and the end of the file, so continuing a long log costs nothing.

    Raises:
        ValueError: The file is not a gradient log (wrong header).
    """
    with open(path, "rb") as handle:
        if not _has_log_header(next(csv.reader([handle.readline().decode("utf-8")]), None), path):
            return None
        start = max(0, handle.seek(0, os.SEEK_END) - 65536)
        handle.seek(start)
        lines = handle.read().decode("utf-8", errors="replace").splitlines()
    if start > 0:
        lines = lines[1:]  # the seek most likely landed inside this line
    for fields in reversed(list(csv.reader(lines))):
        try:
            return _parse_row(fields)["step"]
        except ValueError:
            continue  # the header, or a line cut short
    return None


def _has_log_header(header, path):
    """False for an empty file; raises ValueError for a file that is not a gradient log."""
    if not header:
        return False
    if tuple(header) != COLUMNS:
        raise ValueError(f"{os.fspath(path)} is not a gradient log: its header is {','.join(header)!r}, "
                         f"expected {','.join(COLUMNS)!r}")
    return True


def _parse_row(fields):
    if len(fields) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} fields, got {len(fields)}")
    step, epoch, layer, variable, *norms = fields
    return {"step": int(step), "epoch": int(epoch), "layer": layer, "variable": variable,
            **dict(zip(COLUMNS[4:], map(float, norms)))}


def update_ratio(update_norm, weight_norm):
    """`update_norm / weight_norm`, NaN when the weights are all zero (a fresh bias)."""
    return update_norm / weight_norm if weight_norm > 0 else math.nan


def summarize_layers(rows):
    """Combine per-variable rows into one row per (step, layer).

    A layer's norm is the L2 norm over all its variables, sqrt(sum of squared variable
    norms), so a layer counts as one vector; its update ratio is recomputed from the
    combined norms.

    Args:
        rows: Per-variable rows, as from `read_gradient_log`.

    Returns:
        A list of dicts with keys step, epoch, layer, grad_norm, weight_norm, update_norm,
        update_ratio; in order of step, then of first appearance of the layer.
    """
    squares = {}
    for row in rows:
        key = (row["step"], row["layer"])
        if key not in squares:
            squares[key] = {"epoch": row["epoch"], "grad_norm": 0.0, "weight_norm": 0.0, "update_norm": 0.0}
        for name in ("grad_norm", "weight_norm", "update_norm"):
            squares[key][name] += row[name] ** 2
    summaries = []
    for (step, layer), total in squares.items():
        norms = {name: math.sqrt(total[name]) for name in ("grad_norm", "weight_norm", "update_norm")}
        summaries.append({"step": step, "epoch": total["epoch"], "layer": layer, **norms,
                          "update_ratio": update_ratio(norms["update_norm"], norms["weight_norm"])})
    summaries.sort(key=lambda summary: summary["step"])  # stable: layer order is kept
    return summaries


def plot_gradient_log(log_path, out_path):
    """Plot a gradient log as a PNG: a layers x steps heat map and update/weight ratio lines.

    Top: log10 of each layer's gradient norm, layers (input side at the top) by logged steps;
    white cells are zero gradients, red cells NaN or infinite ones. Bottom: each layer's update/weight ratio per
    step on a log scale, with the usual healthy value 1e-3 as a dashed line.

    Args:
        log_path: The CSV file written by `GradientLogger`.
        out_path: Where to write the PNG (its directory must exist).

    Returns:
        `out_path`.

    Raises:
        FileNotFoundError: There is no file at `log_path`.
        ValueError: The file is not a gradient log, or it has no records.

    Example:
        >>> plot_gradient_log("runs/cifar/gradients.csv", "runs/cifar/gradients.png")
    """
    summaries = summarize_layers(read_gradient_log(log_path))
    if not summaries:
        raise ValueError(f"The gradient log {os.fspath(log_path)} has no records")

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and none is there on servers
    import matplotlib.pyplot as plt
    import numpy as np

    layers = list(dict.fromkeys(summary["layer"] for summary in summaries))
    steps = sorted({summary["step"] for summary in summaries})
    layer_row = {layer: index for index, layer in enumerate(layers)}
    step_column = {step: index for index, step in enumerate(steps)}
    grad_norms = np.full((len(layers), len(steps)), np.nan)
    ratios = np.full((len(layers), len(steps)), np.nan)
    non_finite = np.zeros((len(layers), len(steps)), dtype=bool)
    for summary in summaries:
        cell = layer_row[summary["layer"]], step_column[summary["step"]]
        grad_norms[cell] = summary["grad_norm"]
        ratios[cell] = summary["update_ratio"]
        non_finite[cell] = not math.isfinite(summary["grad_norm"])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norms = np.log10(grad_norms)
    log_norms[~np.isfinite(log_norms)] = np.nan

    heat_map_height = max(2.5, 0.22 * len(layers))
    figure, (heat_axes, ratio_axes) = plt.subplots(
        2, 1, figsize=(11, heat_map_height + 3.5), height_ratios=[heat_map_height, 3.0],
        layout="constrained")

    # Steps are columns by index, not by value, so fits whose step ranges have gaps still tile.
    image = heat_axes.imshow(log_norms, aspect="auto", interpolation="nearest", cmap="viridis")
    figure.colorbar(image, ax=heat_axes, label="log10 gradient L2 norm")
    if non_finite.any():
        # Red, not the white of a zero gradient: an explosion must not look like a vanishing.
        heat_axes.imshow(np.ma.masked_where(~non_finite, non_finite), aspect="auto", interpolation="nearest",
                         cmap=matplotlib.colors.ListedColormap(["red"]))
    heat_axes.set_yticks(range(len(layers)), labels=layers, fontsize=7 if len(layers) > 20 else 9)
    tick_columns = range(0, len(steps), math.ceil(len(steps) / 10))
    heat_axes.set_xticks(tick_columns, labels=[str(steps[column]) for column in tick_columns])
    heat_axes.set_xlabel("step")
    heat_axes.set_title("Gradient norm per layer (white: zero, red: NaN or infinite)")

    colors = plt.cm.viridis(np.linspace(0, 0.95, len(layers)))
    for row, layer in enumerate(layers):
        # Markers too, so that a step between two non-finite ones still shows.
        ratio_axes.plot(steps, ratios[row], color=colors[row], linewidth=1, marker=".", markersize=3, label=layer)
    ratio_axes.axhline(HEALTHY_UPDATE_RATIO, color="black", linestyle="--", linewidth=1,
                       label=f"{HEALTHY_UPDATE_RATIO:g} (typical)")
    if np.any(np.isfinite(ratios) & (ratios > 0)):
        ratio_axes.set_yscale("log")
    ratio_axes.set_xlabel("step")
    ratio_axes.set_ylabel("update norm / weight norm")
    ratio_axes.set_title("Update-to-weight ratio per layer (darker: closer to the input)")
    if len(layers) <= 12:
        ratio_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(out_path, dpi=110)
    plt.close(figure)
    return out_path
