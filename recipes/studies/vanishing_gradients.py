"""Vanishing gradients: deep sigmoid networks starve their first layers; ReLU, batch norm and residuals don't.

    headstart study vanishing-gradients          # about 1-2 minutes on 2 busy CPU cores
    headstart study vanishing-gradients --quick

Six 20-layer MLPs (width 64) of the same depth are trained with the same SGD on the digits:
sigmoid, tanh, ReLU and leaky ReLU (each with the initialisation `"auto"` picks for it), and
sigmoid again with batch normalisation and with residual connections. `GradientLogger`
records every layer's kernel gradient norm during training (its CSV logs are in the run
directory's `gradients/`, ready for `headstart.callbacks.gradient_log.plot_gradient_log`).

The lecture's claim: backpropagation multiplies one factor per layer, and the sigmoid's
derivative is at most 1/4, so in a deep sigmoid network the gradient shrinks by orders of
magnitude on its way to the first layers, which then barely learn; ReLU-family activations,
batch normalisation and residual connections keep it flowing. The study reports the ratio
of the first to the last hidden layer's gradient norm (1 = no vanishing) and the training
loss each network reaches.
"""

import math

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say

DESCRIPTION = "per-layer gradient norms and loss of 20-layer sigmoid/tanh/ReLU/leaky-ReLU MLPs, + batch norm, + residual"
CLAIM = ("In a deep sigmoid network the gradient vanishes towards the first layers and training stalls, while "
         "ReLU-family activations, batch normalisation and residual connections keep the gradient flowing "
         "through the same depth.")

# ## Defaults
DEPTH = 20
WIDTH = 64
CONFIGS = {  # name -> build_mlp options
    "sigmoid": {"activation": "sigmoid"},
    "tanh": {"activation": "tanh"},
    "relu": {"activation": "relu"},
    "leaky_relu": {"activation": "leaky_relu"},
    "sigmoid + batch norm": {"activation": "sigmoid", "batch_norm": True},
    "sigmoid + residual": {"activation": "sigmoid", "residual": True},
}
FIXED = ("relu", "leaky_relu", "sigmoid + batch norm", "sigmoid + residual")  # what should not vanish
LEARNING_RATE = 0.01       # SGD with momentum: its step follows the gradient's size, which is the point
MOMENTUM = 0.9             # (Adam would rescale a vanished gradient and hide it)
BATCH_SIZE = 64
EPOCHS = 10
LOG_EVERY_N_STEPS = 5
QUICK = {"depth": 10, "epochs": 2, "log_every_n_steps": 2}  # half the depth: half the trace time
# Vanished: the first hidden layer's gradient norm below this fraction of the last's.
VANISHED = 1e-3
# Flowing: the ratio within this factor of 1 (two orders of magnitude, against the sigmoid's ~12).
FLOWING = 100.0
# The loss of guessing the 10 (balanced) classes uniformly: ln 10 = 2.30. Stalled: the training
# loss ends above 0.95 of it (no better than knowing the class frequencies); learning: below 0.9.
CHANCE_LOSS = math.log(10)
STALLED = 0.95
LEARNING = 0.9


def train(name, options, data, depth, epochs, every_n_steps, log_dir, seed):
    """Train one network with a GradientLogger; returns per-epoch losses and the log's kernel norms."""
    say(f"training {name} ({depth} layers, {epochs} epochs)")
    import keras

    from headstart.callbacks import GradientLogger, read_gradient_log
    from headstart.models import build_mlp

    x_train, y_train, _, _ = data
    keras.utils.set_random_seed(seed)
    model = build_mlp((x_train.shape[1],), 10, hidden_units=(WIDTH,) * depth, **options)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM), loss=loss_function)
    filename = name.replace(" + ", "_").replace(" ", "_") + ".csv"
    logger = GradientLogger(log_dir=log_dir, every_n_steps=every_n_steps, filename=filename,
                            vanishing_threshold=1e-30, exploding_threshold=1e30)  # the study measures; no warnings
    initial_loss = float(loss_function(y_train, model(x_train, training=False)))
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, callbacks=[logger], verbose=0)

    rows = [row for row in read_gradient_log(logger.log_path) if row["variable"] == "kernel"]
    steps = sorted({row["step"] for row in rows})
    norms = np.full((depth, len(steps)), np.nan)  # (hidden layer, logged step)
    for row in rows:
        layer = row["layer"].rsplit("/", 1)[-1]
        if layer.startswith("layer") and layer.endswith("_dense"):
            norms[int(layer[len("layer"):-len("_dense")]) - 1, steps.index(row["step"])] = row["grad_norm"]
    return {"loss": [initial_loss, *map(float, history.history["loss"])], "steps": steps, "norms": norms}


def run(run_dir, *, quick=False, seed=0):
    depth = QUICK["depth"] if quick else DEPTH
    epochs = QUICK["epochs"] if quick else EPOCHS
    every_n_steps = QUICK["log_every_n_steps"] if quick else LOG_EVERY_N_STEPS
    data = digits_arrays(seed)
    log_dir = run_dir.file("gradients")
    results = {name: train(name, options, data, depth, epochs, every_n_steps, log_dir, seed)
               for name, options in CONFIGS.items()}

    # ## Figure: a layers x steps heat map per network, the profile at step 0, the loss
    plt = pyplot()
    figure = plt.figure(figsize=(10.5, 8.2), layout="constrained")
    grid = figure.add_gridspec(3, 3, height_ratios=[1, 1, 1.2])
    heat_axes = []
    with np.errstate(divide="ignore"):
        logs = {name: np.log10(result["norms"]) for name, result in results.items()}
    finite = np.concatenate([values[np.isfinite(values)] for values in logs.values()])
    low, high = np.percentile(finite, 1), np.percentile(finite, 99.5)
    for index, (name, result) in enumerate(results.items()):
        axis = figure.add_subplot(grid[index // 3, index % 3])
        heat_axes.append(axis)
        image = axis.imshow(logs[name], aspect="auto", interpolation="nearest", cmap="viridis", vmin=low, vmax=high,
                            extent=(result["steps"][0], result["steps"][-1], depth + 0.5, 0.5))
        axis.set_title(name, fontsize=10)
        if index % 3 == 0:
            axis.set_ylabel("hidden layer (1 = input)", fontsize=9)
        if index >= 3:
            axis.set_xlabel("training step", fontsize=9)
        axis.tick_params(labelsize=8)
        axis.set_yticks([1, *range(5, depth + 1, 5)])
    figure.colorbar(image, ax=heat_axes, label="log10 kernel gradient norm", shrink=0.9, location="right")
    profile = figure.add_subplot(grid[2, 0:2])
    loss = figure.add_subplot(grid[2, 2])
    layers = np.arange(1, depth + 1)
    for index, (name, result) in enumerate(results.items()):
        profile.plot(layers, result["norms"][:, 0], marker="o", markersize=3, color=f"C{index}", label=f"{name}, step 0")
        profile.plot(layers, np.nanmedian(result["norms"], axis=1), color=f"C{index}", linestyle=":", linewidth=1)
        loss.plot(np.arange(epochs + 1), result["loss"], marker="o", markersize=3, color=f"C{index}", label=name)
    profile.set_yscale("log")
    profile.set_xticks(layers)
    profile.set_xlabel("hidden layer (1 = input side)")
    profile.set_ylabel("kernel gradient norm")
    profile.set_title("Gradient norm per layer: at step 0 (solid), median over training (dotted)", fontsize=10)
    profile.legend(fontsize=7, ncol=2)
    loss.set_xlabel("epoch (0 = before training)")
    loss.set_ylabel("training loss (log scale)")
    loss.set_yscale("log")
    loss.axhline(CHANCE_LOSS, color="grey", linestyle=":", linewidth=1)
    loss.text(epochs, CHANCE_LOSS, "guessing (ln 10) ", ha="right", va="top", fontsize=7, color="grey")
    loss.set_title(f"SGD lr {LEARNING_RATE}, momentum {MOMENTUM}", fontsize=10)
    loss.legend(fontsize=7)
    for axis in (profile, loss):
        axis.grid(alpha=0.3)
    figure.suptitle(f"{depth}-layer MLPs (width {WIDTH}) on digits: per-layer gradient norms over training "
                    "(GradientLogger)")
    run_dir.save_figure(figure, "vanishing_gradients.png")

    # ## What the run shows
    def ratio_at_start(name):
        norms = results[name]["norms"][:, 0]
        return float(norms[0] / norms[-1])

    def ratio_median(name):
        norms = np.nanmedian(results[name]["norms"], axis=1)
        return float(norms[0] / norms[-1])

    def flowing(name):
        return 1 / FLOWING <= ratio_at_start(name) <= FLOWING

    final_loss = {name: result["loss"][-1] for name, result in results.items()}
    checks = {
        "sigmoid_vanishes": ratio_at_start("sigmoid") < VANISHED and ratio_median("sigmoid") < VANISHED,
        "fixes_keep_it_flowing": all(flowing(name) for name in FIXED),
        # Training: the vanishing network stalls, the fixed ones learn.
        "sigmoid_stalls": final_loss["sigmoid"] > STALLED * CHANCE_LOSS,
        "fixed_networks_learn": all(final_loss[name] < LEARNING * CHANCE_LOSS for name in FIXED),
    }
    findings = {
        "depth": depth, "width": WIDTH, "epochs": epochs, "checks": checks,
        "gradient_ratio_first_to_last_at_start": {name: ratio_at_start(name) for name in results},
        "gradient_ratio_first_to_last_median": {name: ratio_median(name) for name in results},
        "initial_loss": {name: result["loss"][0] for name, result in results.items()},
        "final_loss": final_loss,
        "chance_loss": CHANCE_LOSS,
        "gradient_norm_per_layer_at_start": {name: result["norms"][:, 0].tolist() for name, result in results.items()},
    }
    supported = all(checks.values())
    rows = [(name, ratio_at_start(name), ratio_median(name), result["loss"][0], result["loss"][-1])
            for name, result in results.items()]
    table = markdown_table(("network", f"grad norm layer 1 / layer {depth} (step 0)", "same, median over training",
                            "loss before", f"loss after {epochs} epochs"), rows)
    if supported:
        summary = (f"The first layer of the {depth}-layer sigmoid network got {ratio_at_start('sigmoid'):.0e} of the "
                   f"last layer's gradient (ReLU {ratio_at_start('relu'):.2g}, leaky ReLU "
                   f"{ratio_at_start('leaky_relu'):.2g}, sigmoid + batch norm {ratio_at_start('sigmoid + batch norm'):.2g}, "
                   f"sigmoid + residual {ratio_at_start('sigmoid + residual'):.2g}; tanh {ratio_at_start('tanh'):.2g}) "
                   f"and its training loss went from {results['sigmoid']['loss'][0]:.2f} to {final_loss['sigmoid']:.2f} "
                   f"(guessing: {CHANCE_LOSS:.2f}; ReLU: {final_loss['relu']:.2f}), while every fix learned.")
    else:
        failed = [name for name, passed in checks.items() if not passed]
        summary = f"This run did not show the whole claim: {', '.join(failed)} did not hold (see the table)."
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
