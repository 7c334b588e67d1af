"""Symmetry: hidden units that start equal stay equal under SGD, and dropout breaks the tie.

    headstart study symmetry                     # about 40 s on 2 busy CPU cores
    headstart study symmetry --quick

An MLP (two tanh hidden layers of 32 units) starts with every hidden weight equal
(`headstart.models.initializers.Constant`, 0.1) and is trained with plain minibatch SGD on the
digits, once without and once with dropout (0.5 after each hidden layer); a randomly
initialised copy is the reference for how different units normally are. After every epoch
the study measures, in each hidden layer, the mean pairwise distance between the units'
weight vectors (incoming kernel column and bias), relative to their mean norm: 0 means
the units are identical and the layer works as a single unit.

For the symmetry to be exact the units' *outgoing* weights must be equal too (otherwise the
next layer hands each unit a different error signal and breaks the tie by itself, as the
lecture's argument assumes away): the logits layer gets one random row repeated for every
hidden unit. Without dropout the distance then stays at 0 up to float rounding for the whole
run (the tied units get the same updates, but a matrix product may sum their columns in a
different order, so the study calls them identical below `IDENTICAL`, 1e-6, not at exactly 0);
with dropout each unit is dropped at random, gets its own gradient, and the units drift apart.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say

DESCRIPTION = "equal hidden weights stay equal under SGD; dropout breaks the symmetry"
CLAIM = ("A network whose hidden weights all start equal keeps its hidden units identical under minibatch SGD, "
         "so they never learn different features, while dropout breaks the symmetry.")

# ## Defaults
HIDDEN_UNITS = (32, 32)
ACTIVATION = "tanh"
DROPOUT = 0.5
LEARNING_RATE = 0.1        # plain SGD, no momentum: the lecture's setting
BATCH_SIZE = 32
EPOCHS = 20
QUICK = {"epochs": 3}
CONDITIONS = ("equal weights", "equal weights + dropout", "random init (reference)")
# Identical: the relative distance never exceeds this. Not 0: how a matrix product splits its
# columns into blocks (and so the order in which it sums) can depend on the threads available,
# so tied units may differ by float32 rounding (6.4e-10 seen on a loaded machine).
IDENTICAL = 1e-6
# Broken: with dropout the final relative distance is at least this, four orders above IDENTICAL
# (random init: ~1.4; a 3-epoch quick run reaches 0.06-0.4 depending on the seed).
BROKEN = 0.01


def unit_spread(kernel, bias):
    """Mean pairwise distance between the units' weight vectors, over their mean norm (0: identical)."""
    weights = np.concatenate([kernel, bias[None]], axis=0).T.astype(np.float64)  # (units, inputs + 1)
    distances = np.sqrt(((weights[:, None] - weights[None]) ** 2).sum(axis=-1))
    units = len(weights)
    mean_norm = np.linalg.norm(weights, axis=1).mean()
    return float(distances.sum() / (units * (units - 1)) / mean_norm) if mean_norm > 0 else 0.0


def train(condition, data, epochs, seed):
    """Train one condition; returns per-epoch spreads per hidden layer and validation accuracy."""
    say(f"training {condition} ({epochs} epochs)")
    import keras

    from headstart.models import build_mlp, initializers

    x_train, y_train, x_val, y_val = data
    keras.utils.set_random_seed(seed)
    equal = condition != "random init (reference)"
    model = build_mlp((x_train.shape[1],), 10, hidden_units=HIDDEN_UNITS, activation=ACTIVATION,
                      dropout=DROPOUT if "dropout" in condition else 0.0,
                      kernel_initializer=initializers.Constant() if equal else "auto")
    if equal:
        logits = model.get_layer("head").get_layer("head_logits")
        kernel = logits.kernel.numpy()
        logits.kernel.assign(np.tile(kernel[:1], (kernel.shape[0], 1)))  # equal outgoing weights
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    dense_layers = [model.get_layer("backbone").get_layer(f"layer{i}_dense") for i in range(1, len(HIDDEN_UNITS) + 1)]

    def spreads():
        return [unit_spread(layer.kernel.numpy(), layer.bias.numpy()) for layer in dense_layers]

    record = {"spread": [spreads()], "val_accuracy": [float(model.evaluate(x_val, y_val, verbose=0)[1])]}
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (
        record["spread"].append(spreads()), record["val_accuracy"].append(float(logs["val_accuracy"]))))
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(x_val, y_val),
              callbacks=[recorder], verbose=0)
    record["spread"] = np.array(record["spread"])  # (epochs + 1, layers)
    return record


def run(run_dir, *, quick=False, seed=0):
    epochs = QUICK["epochs"] if quick else EPOCHS
    data = digits_arrays(seed)
    records = {condition: train(condition, data, epochs, seed) for condition in CONDITIONS}

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs_axis = np.arange(epochs + 1)
    for index, (condition, record) in enumerate(records.items()):
        for layer in range(len(HIDDEN_UNITS)):
            left.plot(epochs_axis, record["spread"][:, layer], color=f"C{index}", marker="o", markersize=3,
                      linestyle="-" if layer == 0 else "--", label=f"{condition}, layer {layer + 1}")
        right.plot(epochs_axis, record["val_accuracy"], color=f"C{index}", marker="o", markersize=3, label=condition)
    left.set_xlabel("epoch (0 = initialisation)")
    left.set_ylabel("mean pairwise distance between units / mean norm")
    left.set_title("How different the hidden units are (0 = all identical)")
    left.legend(fontsize=7)
    right.set_xlabel("epoch (0 = initialisation)")
    right.set_ylabel("validation accuracy")
    right.set_title(f"SGD (lr {LEARNING_RATE}) on digits, {ACTIVATION} hidden layers {HIDDEN_UNITS}")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    run_dir.save_figure(figure, "symmetry.png")

    # ## What the run shows
    equal, dropout, random = (records[condition] for condition in CONDITIONS)
    checks = {
        "equal_units_stay_identical": float(equal["spread"].max()) <= IDENTICAL,
        "dropout_breaks_symmetry": float(dropout["spread"][-1].min()) >= BROKEN,
    }
    findings = {
        "epochs": epochs, "checks": checks,
        "max_spread_without_dropout": float(equal["spread"].max()),
        "final_spread_with_dropout": dropout["spread"][-1].tolist(),
        "final_spread_random_init": random["spread"][-1].tolist(),
        "final_val_accuracy": {condition: record["val_accuracy"][-1] for condition, record in records.items()},
        "spread_per_epoch": {condition: record["spread"].tolist() for condition, record in records.items()},
    }
    supported = all(checks.values())
    rows = [(condition, *record["spread"][0], *record["spread"][-1], record["val_accuracy"][-1])
            for condition, record in records.items()]
    headers = ("condition", *(f"spread layer {i} at start" for i in range(1, len(HIDDEN_UNITS) + 1)),
               *(f"spread layer {i} after {epochs} epochs" for i in range(1, len(HIDDEN_UNITS) + 1)),
               "val accuracy")
    table = markdown_table(headers, rows)
    if supported:
        summary = (f"Without dropout the equal hidden units stayed identical up to float rounding for all {epochs} "
                   f"epochs (largest relative distance {findings['max_spread_without_dropout']:.1g}); with dropout "
                   f"they drifted apart to "
                   f"{min(findings['final_spread_with_dropout']):.2f}-{max(findings['final_spread_with_dropout']):.2f} "
                   f"(random init: {min(findings['final_spread_random_init']):.2f}), and validation accuracy was "
                   f"{equal['val_accuracy'][-1]:.2f} vs {dropout['val_accuracy'][-1]:.2f}.")
    else:
        failed = [name for name, passed in checks.items() if not passed]
        summary = f"This run did not show the claim: {', '.join(failed)} did not hold (see the table)."
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
