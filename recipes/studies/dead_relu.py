"""Dead ReLU: a too-large learning rate leaves ReLU units that output zero for every input; leaky ReLU keeps them alive.

    headstart study dead-relu                # 60-90 s on 2 busy CPU cores
    headstart study dead-relu --quick

An MLP with two hidden layers of 64 units (`headstart.models.build_mlp`, He initialisation)
is trained on the digits with Adam at a moderate learning rate (1e-3) and a too-large one
(0.1), once with ReLU and once with leaky ReLU (slope 0.2), from the same initial weights.
After every epoch the study runs the whole training set through the network and counts,
per hidden layer, the units whose pre-activation is at most 0 for every training input: a
ReLU unit there outputs 0 for every input (it is dead), a leaky unit still outputs
0.2 times its input.

The lecture's claim: in the negative region a ReLU is completely dead, not merely small; it
passes no gradient, so nothing pulls it back; a leaky ReLU has a small non-zero slope there
and does not die. The study checks the gradient directly: after training it computes the
gradient of the training loss over the whole training set (`tf.GradientTape`) with respect
to each hidden unit's incoming weights and bias, and reports which units get exactly zero.
The second layer's dead fraction is not quite monotone (84 % to 83 % at one epoch of the
default run): a dead unit's own gradient is zero, but the layers before it keep changing
what it receives, and Adam's momentum moves its weights for some steps after its gradient
stops.
Adam, not SGD, gives the too-large rate: its step is about the learning rate whatever the
gradient's size, so a large rate throws units into the negative region without the loss
overflowing (plain SGD at lr 1, which killed 28 % of the second layer in 5 epochs, made the leaky
network's loss NaN).
"""

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say, verdict

DESCRIPTION = "fraction of dead ReLU units over training at a moderate and a too-large rate, against leaky ReLU"
CLAIM = ("A too-large learning rate pushes ReLU units into the negative region for every input, where they are "
         "dead (exactly zero output and zero gradient, so nothing pulls them back), while leaky ReLU units keep a "
         "non-zero gradient and do not die.")

# ## Defaults
HIDDEN_UNITS = (64, 64)
ACTIVATIONS = ("relu", "leaky_relu")
LEARNING_RATES = {"moderate": 1e-3, "too large": 0.1}   # Adam
BATCH_SIZE = 32
EPOCHS = 10
QUICK = {"epochs": 1}
# Deciding the claim. Killed: at the too-large rate at least this fraction of all hidden ReLU
# units is dead at the end (the 1-epoch quick run measured 0.34, the second layer 0.67).
# Healthy: at the moderate rate at most this fraction is (measured: 0).
KILLED = 0.15
HEALTHY = 0.05


def hidden_layer_names():
    return [f"layer{index}_dense" for index in range(1, len(HIDDEN_UNITS) + 1)]


def active_inputs(model, x):
    """Per hidden layer: `(inputs, units)` booleans, True where the unit's pre-activation is above 0."""
    import keras

    backbone = model.get_layer("backbone")
    probe = keras.Model(backbone.input, [backbone.get_layer(name).output for name in hidden_layer_names()])
    return [np.asarray(pre_activation) > 0 for pre_activation in probe(x, training=False)]


def negative_everywhere(model, x):
    """Per hidden layer: a boolean per unit, True when its pre-activation is <= 0 for every input in `x`."""
    return [~active.any(axis=0) for active in active_inputs(model, x)]


def silent_inputs_only(active, silent_inputs):
    """Per hidden layer: units active on some input, but only on inputs whose loss has exactly zero gradient.

    Their gradient is exactly 0 too, though they are not dead: the softmax of a confidently right
    prediction rounds to the one-hot label in float32, so such an input passes no gradient at all.
    """
    return [layer.any(axis=0) & ~np.any(layer & ~silent_inputs[:, None], axis=0) for layer in active]


def unit_gradient_norms(model, x, y):
    """Per hidden layer: the L2 norm of each unit's gradient (incoming kernel column and bias), whole training set.

    Also returns, per input, whether the loss's gradient with respect to its logits is exactly 0.
    """
    import keras
    import tensorflow as tf

    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backbone = model.get_layer("backbone")
    layers = [backbone.get_layer(name) for name in hidden_layer_names()]
    variables = [variable for layer in layers for variable in (layer.kernel, layer.bias)]
    with tf.GradientTape() as tape:
        logits = model(x, training=False)
        loss = loss_function(y, logits)
    *gradients, logit_gradients = tape.gradient(loss, [*variables, logits])
    norms = []
    for kernel_gradient, bias_gradient in zip(gradients[0::2], gradients[1::2]):
        squares = np.sum(np.square(kernel_gradient.numpy().astype(np.float64)), axis=0)
        norms.append(np.sqrt(squares + np.square(bias_gradient.numpy().astype(np.float64))))
    return norms, np.all(logit_gradients.numpy() == 0, axis=1)


def train(activation, rate_name, initial_weights, data, epochs, seed):
    learning_rate = LEARNING_RATES[rate_name]
    say(f"training {activation} with Adam at learning rate {learning_rate:g} ({epochs} epochs)")
    import keras

    from headstart.models import build_mlp

    x_train, y_train, x_val, y_val = data
    keras.utils.set_random_seed(seed)  # the same mini-batch order for every condition
    model = build_mlp((x_train.shape[1],), 10, hidden_units=HIDDEN_UNITS, activation=activation)
    # ReLU and leaky ReLU get the same He initialisation here (the leaky gain differs by 2 %),
    # so that the two networks start from the same weights.
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    fractions = [[float(np.mean(layer)) for layer in negative_everywhere(model, x_train)]]
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: fractions.append(
        [float(np.mean(layer)) for layer in negative_everywhere(model, x_train)]))
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(x_val, y_val),
                        callbacks=[recorder], verbose=0)
    active = active_inputs(model, x_train)
    negative = [~layer.any(axis=0) for layer in active]
    gradients, silent_inputs = unit_gradient_norms(model, x_train, y_train)
    return {"fractions": np.array(fractions),  # (epochs + 1, layers)
            "negative": negative, "silent_only": silent_inputs_only(active, silent_inputs),
            "silent_inputs": int(silent_inputs.sum()), "gradients": gradients,
            "val_accuracy": float(history.history["val_accuracy"][-1]),
            "train_loss": float(history.history["loss"][-1])}


def label(activation, rate_name):
    return f"{activation}, lr {LEARNING_RATES[rate_name]:g} ({rate_name})"


def plot(records, epochs):
    plt = pyplot()
    figure, (fraction_axes, gradient_axes) = plt.subplots(1, 2, figsize=(12.5, 4.6), layout="constrained")
    colors = {("relu", "moderate"): "tab:blue", ("relu", "too large"): "tab:red",
              ("leaky_relu", "moderate"): "tab:green", ("leaky_relu", "too large"): "tab:orange"}
    epochs_axis = np.arange(epochs + 1)
    for key, record in records.items():
        for layer in range(len(HIDDEN_UNITS)):
            fraction_axes.plot(epochs_axis, 100 * record["fractions"][:, layer], color=colors[key], marker="o",
                               markersize=3, linestyle="-" if layer == 1 else ":",
                               label=f"{label(*key)}, layer {layer + 1}")
    fraction_axes.set_xticks(epochs_axis)
    fraction_axes.set_xlabel("epoch (0 = initialisation)")
    fraction_axes.set_ylabel("% of units with pre-activation <= 0 for every training input")
    fraction_axes.set_title("Dead units (for ReLU; leaky units there still pass 0.2 x input)", fontsize=10)
    fraction_axes.legend(fontsize=7)

    # Every unit's gradient at the end of training, too-large rate; exact zeros drawn on the floor.
    all_norms = np.concatenate([np.concatenate(record["gradients"]) for record in records.values()])
    floor = all_norms[all_norms > 0].min() / 10
    for offset, activation in enumerate(ACTIVATIONS):
        record = records[(activation, "too large")]
        norms, negative = np.concatenate(record["gradients"]), np.concatenate(record["negative"])
        units = np.arange(len(norms))
        shown = ~negative & (norms > 0)
        gradient_axes.scatter(units[shown], norms[shown], s=9, color=colors[(activation, "too large")],
                              marker="o" if offset == 0 else "^", label=f"{activation}: units active on some input")
        silent = ~negative & (norms == 0)
        if silent.any():
            gradient_axes.scatter(units[silent], np.full(silent.sum(), floor), s=40, color="tab:brown", marker="+",
                                  label=f"{activation}: active only on inputs with zero loss gradient")
        if not negative.any():
            continue
        gradient_axes.scatter(units[negative], np.where(norms[negative] > 0, norms[negative], floor), s=30,
                              color="black" if offset == 0 else "tab:purple", marker="x",
                              label=f"{activation}: units negative on every input"
                                    + (" (zero gradient drawn at the floor)" if offset == 0 else ""))
    gradient_axes.axvline(HIDDEN_UNITS[0] - 0.5, color="grey", linewidth=1)
    gradient_axes.axhline(floor, color="grey", linestyle=":", linewidth=1)
    gradient_axes.text(HIDDEN_UNITS[0] / 2, floor, "exactly 0", fontsize=7, ha="center", va="bottom", color="grey")
    gradient_axes.set_yscale("log")
    gradient_axes.set_xlabel(f"hidden unit (layer 1: 0-{HIDDEN_UNITS[0] - 1}, layer 2 after the line)")
    gradient_axes.set_ylabel("gradient norm over the whole training set")
    gradient_axes.set_title(f"Per-unit gradient after training at lr {LEARNING_RATES['too large']:g} (tf.GradientTape)",
                            fontsize=10)
    gradient_axes.legend(fontsize=7)
    for axis in (fraction_axes, gradient_axes):
        axis.grid(alpha=0.3)
    figure.suptitle(f"MLP {HIDDEN_UNITS} on digits, Adam, same initial weights", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    from headstart.models import build_mlp

    epochs = QUICK["epochs"] if quick else EPOCHS
    data = digits_arrays(seed)
    keras.utils.set_random_seed(seed)
    initial_weights = build_mlp((data[0].shape[1],), 10, hidden_units=HIDDEN_UNITS).get_weights()
    records = {(activation, rate_name): train(activation, rate_name, initial_weights, data, epochs, seed)
               for activation in ACTIVATIONS for rate_name in LEARNING_RATES}
    run_dir.save_figure(plot(records, epochs), "dead_relu.png")

    # ## What the run shows
    def dead_fraction(key):
        return float(np.mean(np.concatenate(records[key]["negative"])))

    def gradient_summary(key):
        norms, negative = np.concatenate(records[key]["gradients"]), np.concatenate(records[key]["negative"])
        return {"units_negative_everywhere": int(negative.sum()),
                "units_with_zero_gradient": int(np.sum(norms == 0)),
                "active_units_with_zero_gradient": int(np.sum((norms == 0) & ~negative)),
                "inputs_with_zero_loss_gradient": records[key]["silent_inputs"],
                "active_units_only_on_those_inputs": int(np.concatenate(records[key]["silent_only"]).sum()),
                # True when those are exactly the active units with zero gradient.
                "zero_gradient_of_active_units_explained": bool(np.array_equal(
                    (norms == 0) & ~negative, np.concatenate(records[key]["silent_only"]))),
                "largest_gradient_of_negative_units": float(norms[negative].max()) if negative.any() else None,
                "smallest_gradient_of_active_units": float(norms[~negative].min()) if (~negative).any() else None,
                "smallest_gradient": float(norms.min())}

    relu_large, leaky_large = ("relu", "too large"), ("leaky_relu", "too large")
    gradients = {label(*key): gradient_summary(key) for key in records}
    checks = {
        "too_large_rate_kills_relu_units": dead_fraction(relu_large) >= KILLED,
        "moderate_rate_keeps_relu_units": dead_fraction(("relu", "moderate")) <= HEALTHY,
        # Dead means no gradient: every unit negative on every input gets exactly 0. (Not the
        # converse: a unit active only on inputs whose loss gradient is 0 gets 0 too.)
        "dead_relu_units_get_zero_gradient": all(gradients[label("relu", rate)]["largest_gradient_of_negative_units"]
                                                in (None, 0.0) for rate in LEARNING_RATES),
        "leaky_units_all_get_gradient": all(gradients[label("leaky_relu", rate)]["smallest_gradient"] > 0
                                            for rate in LEARNING_RATES),
        "leaky_trains_better_at_too_large_rate":
            records[leaky_large]["val_accuracy"] > records[relu_large]["val_accuracy"],
    }
    findings = {
        "epochs": epochs, "hidden_units": HIDDEN_UNITS, "learning_rates": LEARNING_RATES, "checks": checks,
        "final_dead_fraction": {label(*key): dead_fraction(key) for key in records},
        "final_dead_fraction_per_layer": {label(*key): record["fractions"][-1].tolist()
                                          for key, record in records.items()},
        "dead_fraction_per_epoch": {label(*key): record["fractions"].tolist() for key, record in records.items()},
        "gradients": gradients,
        "val_accuracy": {label(*key): record["val_accuracy"] for key, record in records.items()},
        "final_train_loss": {label(*key): record["train_loss"] for key, record in records.items()},
    }
    rows = [(label(*key), *(100 * record["fractions"][-1]), gradients[label(*key)]["units_with_zero_gradient"],
             gradients[label(*key)]["smallest_gradient"], record["val_accuracy"]) for key, record in records.items()]
    table = markdown_table(("network, Adam rate", *(f"% negative on every input, layer {i}" for i in
                                                    range(1, len(HIDDEN_UNITS) + 1)),
                            "units with exactly zero gradient", "smallest unit gradient", "val accuracy"), rows)
    measured = (f"after {epochs} epoch{'s' if epochs != 1 else ''} at lr {LEARNING_RATES['too large']:g}, {100 * dead_fraction(relu_large):.0f} % "
                f"of the ReLU units were dead (layer 2: {100 * records[relu_large]['fractions'][-1][-1]:.0f} %), "
                f"every one with exactly zero gradient over the training set"
                + (f" (so did {gradients[label(*relu_large)]['active_units_with_zero_gradient']} units "
                   + ("that were active only on inputs whose loss gradient was exactly 0"
                      if gradients[label(*relu_large)]["zero_gradient_of_active_units_explained"]
                      else "active on some inputs")
                   + ")" if gradients[label(*relu_large)]["active_units_with_zero_gradient"] else "")
                + ", against "
                f"{100 * dead_fraction(('relu', 'moderate')):.0f} % at lr {LEARNING_RATES['moderate']:g}; every leaky "
                f"unit kept a non-zero gradient (smallest {gradients[label(*leaky_large)]['smallest_gradient']:.1e}); "
                f"validation accuracy at the large rate {records[relu_large]['val_accuracy']:.2f} (ReLU) vs "
                f"{records[leaky_large]['val_accuracy']:.2f} (leaky)")
    supported, summary = verdict(checks, measured, "Dead ReLUs shown")
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
