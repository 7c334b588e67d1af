"""Initialisation: what each scheme does to a deep network's activations and gradients at step 0.

    headstart study initialization               # about 30 s on 2 busy CPU cores
    headstart study initialization --quick

The classic figure: a 10-layer MLP (width 128) with tanh and with ReLU, initialised with
zeros, a constant, small normal (std 0.01), large normal (std 1), Xavier/Glorot, He and
LSUV, fed a batch of standardised digits. For each hidden layer it measures the standard
deviation of the activations (and their histogram) and the norm of the loss gradient with
respect to the layer's kernel, before any training.

What the lecture says should happen: zeros and constants make every unit of a layer
identical; small weights shrink the signal layer after layer until it is gone; large
weights saturate tanh (activations pile up at +-1) and blow ReLU activations up; Xavier
keeps a tanh network's signal alive and He keeps a ReLU network's (Xavier under ReLU
halves the variance at every layer); LSUV, which measures instead of assuming, keeps both.

Names are the project's (`headstart.models.initializers.get`): `he_normal` takes the gain of the
layer's activation, so under tanh it is fan-in scaling with gain 5/3; `xavier_uniform` is
the fixed published scheme (gain 1).
"""

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot

DESCRIPTION = "activation and gradient scale per layer of a 10-layer MLP under 7 initialisations (tanh, ReLU)"
CLAIM = ("In a deep network, small initial weights make the activations collapse towards zero and large ones "
         "saturate tanh (and blow up ReLU), while Xavier keeps tanh and He keeps ReLU activations at a steady "
         "scale across layers; zeros and constants make all units of a layer identical.")

# ## Defaults
DEPTH = 10                 # hidden layers
WIDTH = 128                # units per hidden layer
ACTIVATIONS = ("tanh", "relu")
SCHEMES = ("zeros", "constant", "small_normal", "large_normal", "xavier_uniform", "he_normal", "lsuv")
BATCH = 1000               # standardised digits the activations are measured on
QUICK = {"batch": 256}
HISTOGRAM_LAYERS = (1, 4, 7, 10)
# "Steady": the last hidden layer's activation std within this factor of the first's.
STEADY_FACTOR = 5.0
# "Collapsed" / "exploded": the ratio beyond this many orders of magnitude.
COLLAPSE_RATIO = 1e-3
EXPLODE_RATIO = 1e3
SATURATED = 0.99           # |tanh| above this counts as saturated
FLOOR = 1e-12              # exact zeros are drawn here on the log-scale plots


def measure(activation, scheme, x, y, seed):
    """Per-layer activation std, histograms data and kernel-gradient norms at initialisation."""
    import keras
    import tensorflow as tf

    from headstart.models import build_mlp, lsuv

    keras.utils.set_random_seed(seed)
    model = build_mlp((x.shape[1],), 10, hidden_units=(WIDTH,) * DEPTH, activation=activation,
                      kernel_initializer="auto" if scheme == "lsuv" else scheme, name=f"{activation}_{scheme}")
    if scheme == "lsuv":
        lsuv.lsuv(model, x, seed=seed)
    backbone = model.get_layer("backbone")
    probe = keras.Model(backbone.input, [backbone.get_layer(f"layer{i}_act").output for i in range(1, DEPTH + 1)])
    activations = [np.asarray(a) for a in probe(x)]
    kernels = [backbone.get_layer(f"layer{i}_dense").kernel for i in range(1, DEPTH + 1)]
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_function(y, model(x, training=True))
    gradients = tape.gradient(loss, kernels)
    return {
        "std": [float(a.std()) for a in activations],
        "gradient_norm": [float(np.linalg.norm(g)) for g in gradients],
        "saturated_last": float(np.mean(np.abs(activations[-1]) > SATURATED)),
        # Identical units: every example gives every unit of the layer the same value.
        "units_identical": all(float(np.max(a.std(axis=1))) <= 1e-6 * max(1.0, float(np.abs(a).max()))
                               for a in activations),
        "histograms": {layer: activations[layer - 1].ravel() for layer in HISTOGRAM_LAYERS},
    }


def plot_scales(results):
    plt = pyplot()
    figure, axes = plt.subplots(2, len(ACTIVATIONS), figsize=(11, 7.5), sharex=True)
    layers = np.arange(1, DEPTH + 1)
    for column, activation in enumerate(ACTIVATIONS):
        for scheme in SCHEMES:
            result = results[activation][scheme]
            style = {"linewidth": 2.5} if scheme in ("xavier_uniform", "he_normal", "lsuv") else {"linestyle": "--"}
            axes[0, column].plot(layers, np.maximum(result["std"], FLOOR), marker="o", markersize=3, label=scheme,
                                 **style)
            axes[1, column].plot(layers, np.maximum(result["gradient_norm"], FLOOR), marker="o", markersize=3,
                                 **style)
        axes[0, column].set_title(f"{activation}: activation std per layer")
        axes[1, column].set_title(f"{activation}: loss-gradient norm of each kernel at step 0")
        axes[1, column].set_xlabel("hidden layer (1 = input side)")
        axes[0, column].legend(fontsize=7, loc="lower left")
        for axis in axes[:, column]:
            axis.set_yscale("log")
            axis.set_xticks(layers)
            axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("std of the layer's activations")
    axes[1, 0].set_ylabel("||dL/dW|| (Frobenius)")
    figure.suptitle(f"{DEPTH}-layer MLP, width {WIDTH}, at initialisation, on standardised digits "
                    f"(exact zeros are drawn at {FLOOR:g})")
    figure.tight_layout()
    return figure


def plot_histograms(results, activation):
    plt = pyplot()
    figure, axes = plt.subplots(len(SCHEMES), len(HISTOGRAM_LAYERS), figsize=(10, 1.35 * len(SCHEMES) + 0.6))
    for row, scheme in enumerate(SCHEMES):
        for column, layer in enumerate(HISTOGRAM_LAYERS):
            values = results[activation][scheme]["histograms"][layer]
            axis = axes[row, column]
            value_range = (-1.0, 1.0) if activation == "tanh" else None
            if values.max() == values.min():
                value_range = (values.min() - 1.0, values.max() + 1.0)
            axis.hist(values, bins=60, range=value_range, color="C0")
            axis.set_yticks([])
            axis.tick_params(labelsize=7)
            axis.text(0.98, 0.9, f"std {values.std():.2g}", transform=axis.transAxes, ha="right", va="top",
                      fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
            if row == 0:
                axis.set_title(f"layer {layer}", fontsize=9)
            if column == 0:
                axis.set_ylabel(scheme, fontsize=8)
    figure.suptitle(f"{activation}: histograms of the activations at initialisation", fontsize=10)
    figure.tight_layout()
    return figure


def run(run_dir, *, quick=False, seed=0):
    x_train, y_train, _, _ = digits_arrays(seed)
    batch = QUICK["batch"] if quick else BATCH
    x, y = x_train[:batch], y_train[:batch]
    results = {activation: {scheme: measure(activation, scheme, x, y, seed) for scheme in SCHEMES}
               for activation in ACTIVATIONS}

    figure = plot_scales(results)
    run_dir.save_figure(figure, "initialization.png")
    for activation in ACTIVATIONS:
        figure = plot_histograms(results, activation)
        run_dir.save_figure(figure, f"histograms_{activation}.png")

    # ## What the run shows
    def std_ratio(activation, scheme):
        std = results[activation][scheme]["std"]
        return std[-1] / std[0] if std[0] > 0 else 0.0

    def steady(activation, scheme):
        return 1 / STEADY_FACTOR <= std_ratio(activation, scheme) <= STEADY_FACTOR

    def largest_gradient(activation, scheme):
        return max(results[activation][scheme]["gradient_norm"])

    checks = {
        "zeros_all_activations_zero": all(max(results[a]["zeros"]["std"]) == 0 for a in ACTIVATIONS),
        "constant_units_identical": all(results[a]["constant"]["units_identical"] for a in ACTIVATIONS),
        "small_normal_collapses": all(std_ratio(a, "small_normal") < COLLAPSE_RATIO for a in ACTIVATIONS),
        "large_normal_saturates_tanh": results["tanh"]["large_normal"]["saturated_last"] > 0.5,
        "large_normal_explodes_relu": std_ratio("relu", "large_normal") > EXPLODE_RATIO,
        "xavier_steady_tanh": steady("tanh", "xavier_uniform"),
        "he_steady_relu": steady("relu", "he_normal"),
        "lsuv_steady_both": all(steady(a, "lsuv") for a in ACTIVATIONS),
        # The gradient side: small weights give gradients orders of magnitude below a good init's.
        "small_normal_gradients_vanish": (
            largest_gradient("tanh", "small_normal") < COLLAPSE_RATIO * largest_gradient("tanh", "xavier_uniform")
            and largest_gradient("relu", "small_normal") < COLLAPSE_RATIO * largest_gradient("relu", "he_normal")),
    }
    findings = {
        "depth": DEPTH, "width": WIDTH, "batch": batch, "checks": checks,
        "std_ratio_last_to_first": {a: {s: std_ratio(a, s) for s in SCHEMES} for a in ACTIVATIONS},
        "saturated_fraction_last_layer": {a: {s: results[a][s]["saturated_last"] for s in SCHEMES}
                                          for a in ("tanh",)},
        "units_identical": {a: {s: results[a][s]["units_identical"] for s in SCHEMES} for a in ACTIVATIONS},
        "std_per_layer": {a: {s: results[a][s]["std"] for s in SCHEMES} for a in ACTIVATIONS},
        "gradient_norm_per_layer": {a: {s: results[a][s]["gradient_norm"] for s in SCHEMES} for a in ACTIVATIONS},
    }
    supported = all(checks.values())

    rows = []
    for activation in ACTIVATIONS:
        for scheme in SCHEMES:
            result = results[activation][scheme]
            rows.append((activation, scheme, result["std"][0], result["std"][-1], std_ratio(activation, scheme),
                         f"{100 * result['saturated_last']:.0f}%" if activation == "tanh" else "-",
                         "yes" if result["units_identical"] else "no",
                         result["gradient_norm"][0], result["gradient_norm"][-1]))
    table = markdown_table(("activation", "init", "std layer 1", f"std layer {DEPTH}", "ratio",
                            "saturated (last)", "units identical", "grad norm layer 1",
                            f"grad norm layer {DEPTH}"), rows)
    if supported:
        summary = (f"Across {DEPTH} layers the activation std kept a ratio of "
                   f"{std_ratio('tanh', 'xavier_uniform'):.2f} (Xavier, tanh), {std_ratio('relu', 'he_normal'):.2f} "
                   f"(He, ReLU) and {std_ratio('tanh', 'lsuv'):.2f}/{std_ratio('relu', 'lsuv'):.2f} (LSUV), while small "
                   f"normal fell to {std_ratio('tanh', 'small_normal'):.0e}/{std_ratio('relu', 'small_normal'):.0e}, "
                   f"large normal saturated {100 * results['tanh']['large_normal']['saturated_last']:.0f}% of tanh "
                   f"units and grew ReLU's std {std_ratio('relu', 'large_normal'):.0e}-fold, and zeros/constants left "
                   "every unit of a layer identical.")
    else:
        failed = [name for name, passed in checks.items() if not passed]
        summary = f"This run did not show the whole claim: {', '.join(failed)} did not hold (see the table)."
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
