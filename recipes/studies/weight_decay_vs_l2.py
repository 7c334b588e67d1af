"""Study: decoupled weight decay and an L2 penalty are the same thing for SGD, not for Adam.

    headstart study weight-decay-vs-l2            # about 50 s on 2 busy CPU cores (30 s of CPU time)
    headstart study weight-decay-vs-l2 --quick    # the same code path, fewer epochs

Keras applies an optimizer's `weight_decay` before the gradient step, as
`w -= learning_rate * weight_decay * w` (`BaseOptimizer._apply_weight_decay` in
keras/src/optimizers/base_optimizer.py; the TensorFlow backend's override does the same with
`assign_sub`), on the weights the gradient was computed at. Plain SGD then takes
`w -= learning_rate * g`. An L2 penalty `(lambda / 2) * ||w||^2` added to the loss adds
`lambda * w` to `g`, so SGD takes `w -= learning_rate * (g + lambda * w)`: the same step
when `lambda = weight_decay`. `headstart.models.regularizers.L2(l2)` is Keras' convention,
`l2 * ||w||^2` without the 1/2, so the matching penalty is `L2(weight_decay / 2)`.

Adam divides each gradient component by the root of its running mean square. The penalty's
gradient `lambda * w` goes through that division, so a weight whose data gradient is small
is decayed far more strongly than one whose gradient is large; AdamW (Keras' `AdamW`, or any
Keras optimizer's `weight_decay`) shrinks every weight by the same factor
`1 - learning_rate * weight_decay` per step (Loshchilov and Hutter, 2019, "Decoupled weight
decay regularization").

The study trains one MLP (`headstart.models.build_mlp`) on the digits five times from the
same initial weights on the same batches (one fixed, seeded order): SGD with `weight_decay`,
SGD with the L2 penalty, Adam without decay (the reference), Adam with the L2 penalty and
AdamW. Biases are left out of both kinds of decay (`exclude_from_weight_decay` with the
engine's `NO_DECAY_NAMES`; the penalty is only on kernels). Per weight it compares the final
magnitude to the reference run's, against the weight's gradient scale (the RMS of its
minibatch gradients over one epoch at the reference run's final weights). The digits' always
blank pixels give their first-layer weights no data gradient at all: AdamW must shrink them
by exactly `(1 - learning_rate * weight_decay) ** steps`, a closed formula the study checks.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say, verdict
from headstart.recipes.studies.ensembles import shuffled_stream

DESCRIPTION = "SGD: weight decay = L2 penalty (same weights); Adam + L2 vs AdamW: decay that depends on the gradient"
CLAIM = ("With SGD, decoupled weight decay and an L2 penalty (lambda/2)||w||^2 with lambda = weight decay give "
         "the same weights; with Adam they do not: the penalty's decay is divided by each weight's gradient "
         "scale, while AdamW decays every weight at the same rate.")

# ## Model and data order (the same for all five runs)
HIDDEN_UNITS = (64,)
BATCH_SIZE = 32
EPOCHS = 20
QUICK = {"epochs": 2}

# ## Optimizers. SGD's decay is the lecture's (1 - lr * lambda) per step at lr 0.05. For Adam,
# 0.1 makes AdamW's shrinkage visible within the run (0.91 after 900 steps) while the same
# lambda as a penalty still trains (measured: 1.0 collapsed Adam + L2 to chance, kernel norm
# 0.08; 0.1 gave 0.95 validation accuracy; 0.01 already halved the kernel norm).
SGD_LEARNING_RATE = 0.05
SGD_WEIGHT_DECAY = 1e-2
ADAM_LEARNING_RATE = 1e-3
ADAM_WEIGHT_DECAY = 0.1

# ## What counts as "the same" and "different"
SAME_WEIGHTS = 1e-4        # SGD: largest |w_decay - w_L2| over the largest |w| of either (float32 rounding only)
DIFFERENT_WEIGHTS = 0.1    # Adam: the two forms must differ by at least this, on the same scale
CLOSED_FORM = 1e-4         # AdamW's zero-gradient weights: relative error to w0 * (1 - lr * wd) ** steps
GRADIENT_BINS = 8          # bins of gradient scale (log-spaced) for the shrinkage medians in the figure
RUNS = ("SGD + weight decay", "SGD + L2 penalty", "Adam (no decay)", "Adam + L2 penalty", "AdamW")


def make_optimizer(run):
    import keras

    from headstart.recipes.engine import NO_DECAY_NAMES

    optimizer = {
        "SGD + weight decay": lambda: keras.optimizers.SGD(SGD_LEARNING_RATE, weight_decay=SGD_WEIGHT_DECAY),
        "SGD + L2 penalty": lambda: keras.optimizers.SGD(SGD_LEARNING_RATE),
        "Adam (no decay)": lambda: keras.optimizers.Adam(ADAM_LEARNING_RATE),
        "Adam + L2 penalty": lambda: keras.optimizers.Adam(ADAM_LEARNING_RATE),
        "AdamW": lambda: keras.optimizers.AdamW(ADAM_LEARNING_RATE, weight_decay=ADAM_WEIGHT_DECAY),
    }[run]()
    if optimizer.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


def penalty(run):
    """The L2 penalty matching the run's decay: `L2(weight_decay / 2)` (Keras' l2 has no 1/2)."""
    from headstart.models.regularizers import L2

    if run == "SGD + L2 penalty":
        return L2(SGD_WEIGHT_DECAY / 2)
    if run == "Adam + L2 penalty":
        return L2(ADAM_WEIGHT_DECAY / 2)
    return None


def train(run, initial_weights, stream, validation, seed):
    say(f"training {run}")
    import keras

    from headstart.models import build_mlp

    keras.utils.set_random_seed(seed)
    model = build_mlp(stream[0].shape[1:], 10, hidden_units=HIDDEN_UNITS, kernel_regularizer=penalty(run))
    model.set_weights(initial_weights)
    model.compile(optimizer=make_optimizer(run), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*stream, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    x_val, y_val = validation
    accuracy = float(np.mean(np.argmax(model(x_val), axis=-1) == y_val))
    return model, accuracy


def gradient_scale(model, x_train, y_train):
    """Per kernel weight, the RMS of its minibatch data gradients over one epoch (no penalty)."""
    import keras
    import tensorflow as tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = kernel_variables(model)
    squares = [np.zeros(kernel.shape) for kernel in kernels]
    batches = 0
    for start in range(0, len(x_train), BATCH_SIZE):
        with tf.GradientTape() as tape:
            batch_loss = loss(y_train[start:start + BATCH_SIZE], model(x_train[start:start + BATCH_SIZE]))
        for square, gradient in zip(squares, tape.gradient(batch_loss, kernels)):
            square += np.square(gradient.numpy())
        batches += 1
    return np.concatenate([np.sqrt(square / batches).ravel() for square in squares])


def kernel_variables(model):
    return [weight for weight in model.trainable_weights if weight.path.endswith("kernel")]


def kernels_flat(model):
    return np.concatenate([kernel.numpy().ravel() for kernel in kernel_variables(model)])


def plot(weights, scale, blank, steps, findings):
    plt = pyplot()
    figure, (sgd_axes, adam_axes, shrink_axes) = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    sgd_axes.plot(weights["SGD + L2 penalty"], weights["SGD + weight decay"], ".", markersize=2, alpha=0.4)
    limit = np.abs(weights["SGD + L2 penalty"]).max()
    sgd_axes.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8, linestyle="--")
    sgd_axes.set_xlabel("weight, SGD + L2 penalty L2(wd / 2)")
    sgd_axes.set_ylabel("weight, SGD + weight_decay wd")
    sgd_axes.set_title(f"SGD (lr {SGD_LEARNING_RATE:g}, wd {SGD_WEIGHT_DECAY:g}): the same weights\n"
                       f"largest difference {findings['sgd_max_relative_difference']:.1e} of the largest weight",
                       fontsize=10)
    adam_axes.plot(weights["Adam + L2 penalty"], weights["AdamW"], ".", markersize=2, alpha=0.4, color="tab:red")
    limit = max(np.abs(weights["Adam + L2 penalty"]).max(), np.abs(weights["AdamW"]).max())
    adam_axes.plot([-limit, limit], [-limit, limit], color="black", linewidth=0.8, linestyle="--")
    adam_axes.set_xlabel("weight, Adam + L2 penalty L2(wd / 2)")
    adam_axes.set_ylabel("weight, AdamW weight_decay wd")
    adam_axes.set_title(f"Adam (lr {ADAM_LEARNING_RATE:g}, wd {ADAM_WEIGHT_DECAY:g}): different weights\n"
                        f"largest difference {findings['adam_max_relative_difference']:.2f} of the largest weight",
                        fontsize=10)
    reference = np.abs(weights["Adam (no decay)"])
    live = ~blank & (scale > 0)
    edges = np.logspace(np.log10(scale[live].min()), np.log10(scale[live].max()), GRADIENT_BINS + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    for run, color in (("Adam + L2 penalty", "tab:red"), ("AdamW", "tab:blue")):
        ratio = np.abs(weights[run]) / np.maximum(reference, 1e-12)
        shrink_axes.plot(scale[live], ratio[live], ".", markersize=1.5, alpha=0.15, color=color)
        medians = [np.median(ratio[live][(scale[live] >= low) & (scale[live] <= high)])
                   if np.any((scale[live] >= low) & (scale[live] <= high)) else np.nan
                   for low, high in zip(edges[:-1], edges[1:])]
        shrink_axes.plot(centres, medians, marker="o", color=color, label=f"{run}: median per bin")
    shrink_axes.axhline(findings["adamw_closed_form_factor"], color="tab:blue", linestyle=":",
                        label=f"(1 - lr wd)^{steps} = {findings['adamw_closed_form_factor']:.2f}")
    shrink_axes.set_xscale("log")
    shrink_axes.set_yscale("log")
    shrink_axes.set_ylim(1e-3, 10)
    shrink_axes.set_xlabel("gradient scale of the weight (RMS of minibatch gradients)")
    shrink_axes.set_ylabel("|w| / |w| of Adam without decay")
    shrink_axes.set_title("How much each kernel weight was shrunk, by its gradient scale\n"
                          f"(zero-gradient blank-pixel weights: L2 {findings['blank_shrink']['Adam + L2 penalty']:.1e}, "
                          f"AdamW {findings['blank_shrink']['AdamW']:.2f})", fontsize=10)
    shrink_axes.legend(fontsize=8, loc="lower right")
    for axes in (sgd_axes, adam_axes, shrink_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(f"Weight decay vs. an L2 penalty: one MLP {HIDDEN_UNITS} on digits, the same initial weights "
                    f"and batches ({steps} steps)", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    from headstart.models import build_mlp

    keras.utils.set_random_seed(seed)
    epochs = QUICK["epochs"] if quick else EPOCHS

    # ## Data, batch order and the shared initial weights
    x_train, y_train, x_val, y_val = digits_arrays(seed)
    stream = shuffled_stream(x_train, y_train, epochs, seed)  # the same batches for every run
    steps = -(-len(stream[1]) // BATCH_SIZE)
    initial = build_mlp(x_train.shape[1:], 10, hidden_units=HIDDEN_UNITS)
    initial_weights = initial.get_weights()
    initial_kernels = kernels_flat(initial)

    # ## Train the five runs
    models, accuracy = {}, {}
    for name in RUNS:
        models[name], accuracy[name] = train(name, initial_weights, stream, (x_val, y_val), seed)
    weights = {name: kernels_flat(model) for name, model in models.items()}
    scale = gradient_scale(models["Adam (no decay)"], x_train, y_train)

    # ## The numbers that decide the claim
    def max_relative_difference(first, second):
        largest = max(np.abs(weights[first]).max(), np.abs(weights[second]).max())
        return float(np.abs(weights[first] - weights[second]).max() / largest)

    # Kernel weights of blank input pixels (always 0 after standardising): no data gradient.
    blank_pixels = np.all(x_train == 0, axis=0)
    blank = np.zeros_like(initial_kernels, dtype=bool)
    blank[:blank_pixels.size * HIDDEN_UNITS[0]] = np.repeat(blank_pixels, HIDDEN_UNITS[0])
    closed_form_factor = (1.0 - ADAM_LEARNING_RATE * ADAM_WEIGHT_DECAY) ** steps
    expected_blank = initial_kernels[blank] * closed_form_factor
    closed_form_error = float(np.abs(weights["AdamW"][blank] - expected_blank).max()
                              / np.abs(expected_blank).max()) if blank.any() else float("nan")
    blank_shrink = {name: float(np.median(np.abs(weights[name][blank]) / np.abs(initial_kernels[blank])))
                    if blank.any() else float("nan") for name in ("Adam (no decay)", "Adam + L2 penalty", "AdamW")}
    # The slope of log(shrinkage) against log(gradient scale), over the weights that have a
    # gradient: about 0 when the decay ignores the gradient, positive when small-gradient
    # weights are decayed more.
    live = ~blank & (scale > 0)
    reference = np.abs(weights["Adam (no decay)"])
    slopes = {}
    for name in ("Adam + L2 penalty", "AdamW"):
        ratio = np.abs(weights[name][live]) / np.maximum(reference[live], 1e-12)
        slopes[name] = float(np.polyfit(np.log10(scale[live]), np.log10(np.maximum(ratio, 1e-12)), 1)[0])
    findings = {
        "epochs": epochs, "steps": steps,
        "sgd_max_relative_difference": max_relative_difference("SGD + weight decay", "SGD + L2 penalty"),
        "adam_max_relative_difference": max_relative_difference("AdamW", "Adam + L2 penalty"),
        "blank_pixel_weights": int(blank.sum()),
        "adamw_closed_form_factor": closed_form_factor,
        "adamw_closed_form_relative_error": closed_form_error,
        "blank_shrink": blank_shrink,
        "shrinkage_slope_vs_gradient_scale": slopes,
        "kernel_norm": {name: float(np.linalg.norm(values)) for name, values in weights.items()},
        "val_accuracy": accuracy,
    }
    checks = {
        "sgd_forms_equal": findings["sgd_max_relative_difference"] <= SAME_WEIGHTS,
        "adam_forms_differ": findings["adam_max_relative_difference"] >= DIFFERENT_WEIGHTS,
        "adamw_matches_closed_form": closed_form_error <= CLOSED_FORM,
        "l2_decays_small_gradients_more": slopes["Adam + L2 penalty"] > slopes["AdamW"] + 0.1,
    }
    findings["checks"] = checks

    figure = plot(weights, scale, blank, steps, findings)
    run_dir.save_figure(figure, "weight_decay_vs_l2.png")

    table = markdown_table(
        ["run", "kernel norm", "blank-pixel weights: median abs(w) / abs(w0)",
         "slope of log shrinkage vs log gradient scale", "val accuracy"],
        [(name, findings["kernel_norm"][name], blank_shrink.get(name, "-"), slopes.get(name, "-"), accuracy[name])
         for name in RUNS])
    table += "\n" + markdown_table(["comparison", "largest abs difference / largest abs weight"], [
        ("SGD + weight decay vs SGD + L2 penalty", findings["sgd_max_relative_difference"]),
        ("AdamW vs Adam + L2 penalty", findings["adam_max_relative_difference"]),
    ])
    measured = (f"after {steps} steps, SGD with weight_decay {SGD_WEIGHT_DECAY:g} and with L2({SGD_WEIGHT_DECAY / 2:g}) "
                f"ended {findings['sgd_max_relative_difference']:.1e} apart (relative to the largest weight); "
                f"AdamW and Adam + L2 ended {findings['adam_max_relative_difference']:.2f} apart. AdamW shrank the "
                f"{int(blank.sum())} zero-gradient weights by {blank_shrink['AdamW']:.3f} "
                f"(closed form {closed_form_factor:.3f}, error {closed_form_error:.1e}); Adam + L2 by "
                f"{blank_shrink['Adam + L2 penalty']:.1e}. The slope of log shrinkage against log gradient "
                f"scale is {slopes['Adam + L2 penalty']:.2f} for Adam + L2 and {slopes['AdamW']:.2f} for AdamW.")
    supported, summary = verdict(checks, measured)
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
