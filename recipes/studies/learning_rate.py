"""Study: the update-to-weight ratio as a gauge of the learning rate.

    headstart study learning-rate            # about 20 s on 2 busy CPU cores
    headstart study learning-rate --quick    # the same code path, fewer epochs

The lecture's advice: watch the ratio of the size of each update to the size of the
weights it changes; about 1e-3 is healthy, much smaller means the rate is too small
(training crawls), much larger means it is too large (training thrashes or diverges).
Here one MLP (`headstart.models.build_mlp`) on the digits is trained from the same initial weights
with plain SGD at three rates, and `headstart.callbacks.GradientLogger` measures each layer's
update norm / weight norm as training runs (its CSV logs are kept in the run directory,
one per rate, and read back with `headstart.callbacks.gradient_log.read_gradient_log`).
"""

import math

import numpy as np

from headstart.callbacks.gradient_log import HEALTHY_UPDATE_RATIO
from headstart.recipes.studies import StudyResult, markdown_table, pyplot, say
from headstart.recipes.studies.optimizers import load_digits_arrays

DESCRIPTION = "Update-to-weight ratio (GradientLogger) for SGD learning rates too small, about right and too large"
CLAIM = ("The ratio of update to weight magnitude tracks the learning rate: far below ~1e-3 training "
         "crawls, around 1e-3 it trains well, far above it training is unstable.")

# ## The three learning rates (plain SGD, no momentum: the update is the rate times the
# gradient). Chosen from a scan of 1e-4 to 3 on this MLP: 3e-2 gives ratios of 1e-3 to
# 4e-3 per layer; 3 kills most ReLUs at the first steps (ratio 0), so "too large" is 1.
LEARNING_RATES = {"too small": 1e-4, "about right": 3e-2, "too large": 1.0}
HEALTHY_RATIO = HEALTHY_UPDATE_RATIO  # the lecture's rule of thumb

# ## Model and training
HIDDEN_UNITS = (128, 64)
BATCH_SIZE = 32
EPOCHS = 20
QUICK_EPOCHS = 2
LOG_EVERY_N_STEPS = 5
COLORS = {"too small": "tab:blue", "about right": "tab:green", "too large": "tab:red"}


def train_at_rate(learning_rate, initial_weights, train, validation, epochs, log_dir, seed):
    """Train with SGD at `learning_rate`; the per-layer update ratios from the gradient log."""
    say(f"training with SGD at learning rate {learning_rate:g} ({epochs} epochs)")
    import keras

    from headstart.callbacks import GradientLogger
    from headstart.callbacks.gradient_log import read_gradient_log, summarize_layers
    from headstart.models import build_mlp

    (x_train, y_train), (x_val, y_val) = train, validation
    keras.utils.set_random_seed(seed)  # the same mini-batch order at every rate
    model = build_mlp(x_train.shape[1:], 10, hidden_units=HIDDEN_UNITS)
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = GradientLogger(log_dir=log_dir, every_n_steps=LOG_EVERY_N_STEPS)
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, callbacks=[logger], verbose=0)
    summaries = summarize_layers(read_gradient_log(logger.log_path))
    layers = list(dict.fromkeys(summary["layer"] for summary in summaries))
    steps = sorted({summary["step"] for summary in summaries})
    ratios = {layer: [summary["update_ratio"] for summary in summaries if summary["layer"] == layer]
              for layer in layers}
    finite = [ratio for values in ratios.values() for ratio in values if math.isfinite(ratio)]
    val_accuracy = float(np.mean(np.argmax(model(x_val), axis=-1) == y_val))
    return {"steps": steps, "ratios": ratios, "loss": history.history["loss"],
            "median_ratio": float(np.median(finite)) if finite else math.nan,
            "layer_median_ratio": {layer: float(np.nanmedian(values)) for layer, values in ratios.items()},
            "val_accuracy": val_accuracy}


def plot(results):
    plt = pyplot()
    figure, (ratio_axes, loss_axes) = plt.subplots(1, 2, figsize=(13, 5), width_ratios=[1.4, 1],
                                                   layout="constrained")
    ratio_axes.axhspan(HEALTHY_RATIO / 3, HEALTHY_RATIO * 3, color="tab:green", alpha=0.08)
    ratio_axes.axhline(HEALTHY_RATIO, color="black", linestyle="--", linewidth=1, label="1e-3 (healthy)")
    for name, result in results.items():
        ratios = np.array(list(result["ratios"].values()))
        with np.errstate(all="ignore"):
            median = np.nanmedian(ratios, axis=0)
        ratio_axes.fill_between(result["steps"], np.nanmin(ratios, axis=0), np.nanmax(ratios, axis=0),
                                color=COLORS[name], alpha=0.2)
        ratio_axes.plot(result["steps"], median, color=COLORS[name],
                        label=f"lr {LEARNING_RATES[name]:g} ({name}): median {result['median_ratio']:.1e}")
    ratio_axes.set_yscale("log")
    ratio_axes.set_xlabel("step")
    ratio_axes.set_ylabel("update norm / weight norm")
    ratio_axes.set_title("Update-to-weight ratio (line: median of the layers, band: smallest to largest)")
    ratio_axes.legend(fontsize=8, loc="lower right")
    for name, result in results.items():
        loss_axes.plot(range(1, len(result["loss"]) + 1), result["loss"], color=COLORS[name], marker=".",
                       label=f"lr {LEARNING_RATES[name]:g}: val accuracy {result['val_accuracy']:.2f}")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss")
    loss_axes.set_title("Training loss, same initial weights")
    loss_axes.legend(fontsize=8)
    figure.suptitle("Plain SGD on digits at three learning rates, measured with GradientLogger", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    from headstart.models import build_mlp

    keras.utils.set_random_seed(seed)
    epochs = QUICK_EPOCHS if quick else EPOCHS

    # ## Data and the shared initial weights
    train, validation = load_digits_arrays(seed)
    initial_weights = build_mlp(train[0].shape[1:], 10, hidden_units=HIDDEN_UNITS).get_weights()

    # ## Train at each rate
    results = {name: train_at_rate(rate, initial_weights, train, validation, epochs,
                                   str(run_dir.file(f"gradients_lr_{rate:g}")), seed)
               for name, rate in LEARNING_RATES.items()}

    figure = plot(results)
    run_dir.save_figure(figure, "learning_rate.png")

    medians = [results[name]["median_ratio"] for name in LEARNING_RATES]
    increasing = all(a < b for a, b in zip(medians, medians[1:]))
    middle = results["about right"]["median_ratio"]
    middle_healthy = 1e-4 <= middle <= 1e-2
    best = max(results, key=lambda name: results[name]["val_accuracy"])
    supported = increasing and middle_healthy and best == "about right"
    findings = {
        "epochs": epochs,
        "learning_rates": LEARNING_RATES,
        "median_update_ratio": {name: result["median_ratio"] for name, result in results.items()},
        "layer_median_update_ratio": {name: result["layer_median_ratio"] for name, result in results.items()},
        "final_train_loss": {name: result["loss"][-1] for name, result in results.items()},
        "val_accuracy": {name: result["val_accuracy"] for name, result in results.items()},
        "ratio_increases_with_rate": increasing,
        "middle_ratio_within_1e-4_1e-2": middle_healthy,
        "best_val_accuracy": best,
    }
    table = markdown_table(["rate", "learning rate", "median update/weight ratio", "final training loss",
                            "val accuracy"],
                           [(name, LEARNING_RATES[name], result["median_ratio"], result["loss"][-1],
                             result["val_accuracy"]) for name, result in results.items()])
    measured = ", ".join(f"{results[name]['median_ratio']:.1e} at lr {rate:g}" for name, rate in LEARNING_RATES.items())
    summary = (f"Median update/weight ratio {measured}; validation accuracy "
               + ", ".join(f"{results[name]['val_accuracy']:.2f}" for name in LEARNING_RATES) + ".")
    if not supported:
        problems = []
        if not increasing:
            problems.append("the ratio does not increase with the rate")
        if not middle_healthy:
            problems.append("the middle rate's ratio is outside [1e-4, 1e-2]")
        if best != "about right":
            problems.append(f"the best validation accuracy is at the rate called {best!r}")
        summary = "Not fully shown by this run (" + "; ".join(problems) + "). " + summary
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
