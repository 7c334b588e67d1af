"""Study: eight optimizers on the same problems, from plain gradient descent to AdamW.

    headstart study optimizers            # about 75 s on 2 busy CPU cores (with the TensorFlow start-up)
    headstart study optimizers --quick    # about 20 s, most of it TensorFlow start-up and tracing

Two problems, each started from the same point for every optimizer:

- the Rosenbrock function, a curved ravine: steep walls, a flat floor that bends towards
  the minimum at (1, 1). Plain gradient descent must keep its step small enough for the
  walls and then crawls along the floor; momentum builds up speed along the floor, and the
  adaptive methods rescale each coordinate. Each optimizer is the real Keras one, stepping
  a 2-D `keras.Variable`, so the drawn paths are what the optimizer does.
- an MLP (`headstart.models.build_mlp`) on the digits, every optimizer starting from the same
  initial weights: training loss per epoch. Full-batch GD takes one step per epoch, the
  others one per mini-batch.

Each optimizer gets a learning rate that is usual for it (the table lists them): the
study compares the methods as they are used, not at one shared rate, which would be far
too small for some and unstable for others.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot, say

DESCRIPTION = "GD, SGD, momentum, Nesterov, Adagrad, RMSprop, Adam, AdamW: paths in a ravine and MLP loss curves"
CLAIM = ("Momentum and adaptive methods (Adam) reach a lower loss than plain gradient descent in the "
         "same number of steps on a ravine, where gradient descent zig-zags across the walls and "
         "crawls along the floor.")

# ## The ravine (Rosenbrock): f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1)
RAVINE_START = (-1.5, 2.0)
RAVINE_STEPS = 500
QUICK_RAVINE_STEPS = 200
# "SGD" on a 2-D function: the exact gradient plus Gaussian noise of this standard
# deviation, standing in for the noise of a mini-batch gradient.
RAVINE_GRADIENT_NOISE = 20.0
# Learning rates for the ravine. GD-type methods must stay below ~2/curvature of the walls
# (about 1e-3 here: larger rates diverge from this start). The adaptive methods take steps
# of about their learning rate per coordinate, so theirs are the best of a coarse scan
# (0.01 to 1) over 500 steps; Adagrad's effective rate shrinks as its sum of squared
# gradients grows, so it starts large.
RAVINE_SETTINGS = {
    "GD": dict(kind="sgd", learning_rate=1e-3),
    "SGD": dict(kind="sgd", learning_rate=1e-3),
    "Momentum": dict(kind="sgd", learning_rate=1e-3, momentum=0.9),
    "Nesterov": dict(kind="sgd", learning_rate=1e-3, momentum=0.9, nesterov=True),
    "Adagrad": dict(kind="adagrad", learning_rate=1.0),
    "RMSprop": dict(kind="rmsprop", learning_rate=0.03),
    "Adam": dict(kind="adam", learning_rate=0.1),
    "AdamW": dict(kind="adamw", learning_rate=0.1, weight_decay=0.01),
}

# ## The MLP on digits
HIDDEN_UNITS = (128, 64)
EPOCHS = 30
QUICK_EPOCHS = 2
BATCH_SIZE = 32  # every optimizer but full-batch GD
# Learning rates for the MLP: the usual starting points (Keras' defaults for the adaptive
# methods; SGD with momentum at a tenth of plain SGD's, as the lecture advises).
MLP_SETTINGS = {
    "GD": dict(kind="sgd", learning_rate=0.5, full_batch=True),
    "SGD": dict(kind="sgd", learning_rate=0.1),
    "Momentum": dict(kind="sgd", learning_rate=0.01, momentum=0.9),
    "Nesterov": dict(kind="sgd", learning_rate=0.01, momentum=0.9, nesterov=True),
    "Adagrad": dict(kind="adagrad", learning_rate=0.05),
    "RMSprop": dict(kind="rmsprop", learning_rate=1e-3),
    "Adam": dict(kind="adam", learning_rate=1e-3),
    "AdamW": dict(kind="adamw", learning_rate=1e-3, weight_decay=0.004),
}
COLORS = dict(zip(RAVINE_SETTINGS, ("black", "tab:gray", "tab:blue", "tab:cyan", "tab:olive",
                                    "tab:orange", "tab:red", "tab:purple")))


def make_optimizer(kind, learning_rate, momentum=0.0, nesterov=False, weight_decay=None, full_batch=False):
    """A Keras optimizer from one entry of the settings tables (`full_batch` is for `fit`)."""
    import keras

    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)
    if kind == "adagrad":
        return keras.optimizers.Adagrad(learning_rate)
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate)
    if kind == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer kind. Received: kind={kind!r}")


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def ravine_path(settings, steps, noise_scale, seed):
    """The points one optimizer visits on the Rosenbrock function, start included."""
    import keras
    import tensorflow as tf

    point = keras.Variable(np.array(RAVINE_START, dtype="float32"), name="point")
    optimizer = make_optimizer(**settings)
    noise = np.random.default_rng(seed).normal(scale=noise_scale, size=(steps, 2)).astype("float32")

    @tf.function
    def step(gradient_noise):
        with tf.GradientTape() as tape:
            tape.watch(point.value)
            loss = rosenbrock(point.value[0], point.value[1])
        gradient = tape.gradient(loss, point.value)
        optimizer.apply_gradients([(gradient + gradient_noise, point)])

    path = [point.numpy().copy()]
    for index in range(steps):
        step(noise[index])
        path.append(point.numpy().copy())
    return np.array(path)


def load_digits_arrays(seed):
    """Digits as arrays (8x8x1 in [0, 1]) from the project's one data entry point."""
    from headstart.recipes import data

    splits = data.load("digits", image_size=8, channels=1, seed=seed, test_fraction=0.0)
    return dataset_arrays(splits.train), dataset_arrays(splits.val)


def dataset_arrays(dataset):
    images, labels = zip(*[(images.numpy(), labels.numpy()) for images, labels in dataset])
    return np.concatenate(images), np.concatenate(labels)


def train_mlp_losses(train, validation, epochs, seed):
    """Training loss per epoch (the epoch-0 entry is before training) for every optimizer."""
    import keras

    from headstart.models import build_mlp

    (x_train, y_train), (x_val, y_val) = train, validation
    keras.utils.set_random_seed(seed)
    initial_weights = build_mlp(x_train.shape[1:], 10, hidden_units=HIDDEN_UNITS).get_weights()
    results = {}
    for name, settings in MLP_SETTINGS.items():
        say(f"training the MLP with {name} ({epochs} epochs)")
        keras.utils.set_random_seed(seed)  # the same mini-batch order for every optimizer
        model = build_mlp(x_train.shape[1:], 10, hidden_units=HIDDEN_UNITS)
        model.set_weights(initial_weights)
        model.compile(optimizer=make_optimizer(**settings),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        start_loss = float(model.compute_loss(y=y_train, y_pred=model(x_train)))
        batch_size = len(x_train) if settings.get("full_batch") else BATCH_SIZE
        history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
        # Evaluated eagerly: one forward pass does not pay for tracing an evaluation step.
        val_accuracy = float(np.mean(np.argmax(model(x_val), axis=-1) == y_val))
        results[name] = {"loss": [start_loss, *history.history["loss"]], "val_accuracy": val_accuracy,
                         "steps_per_epoch": -(-len(x_train) // batch_size)}
    return results


def plot(paths, mlp, epochs):
    plt = pyplot()
    figure = plt.figure(figsize=(12, 8.5), layout="constrained")
    grid = figure.add_gridspec(3, 4, height_ratios=[1, 1, 1.15])
    xs, ys = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))
    levels = np.logspace(-1, 3.5, 10)
    for index, (name, path) in enumerate(paths.items()):
        axes = figure.add_subplot(grid[index // 4, index % 4])
        axes.contour(xs, ys, rosenbrock(xs, ys), levels=levels, colors="0.75", linewidths=0.6)
        axes.plot(path[:, 0], path[:, 1], "-", color=COLORS[name], linewidth=1.2)
        axes.plot(*RAVINE_START, "o", color="black", markersize=4)
        axes.plot(1, 1, "*", color="gold", markeredgecolor="black", markersize=12)
        final = float(rosenbrock(*path[-1]))
        axes.set_title(f"{name} (lr {RAVINE_SETTINGS[name]['learning_rate']:g}): f = {final:.2g}", fontsize=9)
        axes.set_xlim(-2, 2)
        axes.set_ylim(-1, 3)
        axes.set_xticks([-2, -1, 0, 1, 2])
        axes.tick_params(labelsize=8)
    ravine_axes = figure.add_subplot(grid[2, :2])
    for name, path in paths.items():
        ravine_axes.plot(rosenbrock(path[:, 0], path[:, 1]), color=COLORS[name], label=name, linewidth=1.2)
    ravine_axes.set_yscale("log")
    ravine_axes.set_xlabel("step")
    ravine_axes.set_ylabel("Rosenbrock f(x, y)")
    ravine_axes.set_title(f"Ravine: loss per step from ({RAVINE_START[0]:g}, {RAVINE_START[1]:g})")
    ravine_axes.legend(fontsize=8, ncol=2)
    mlp_axes = figure.add_subplot(grid[2, 2:])
    for name, result in mlp.items():
        mlp_axes.plot(range(epochs + 1), result["loss"], color=COLORS[name], linewidth=1.2,
                      label=f"{name} (val acc {result['val_accuracy']:.2f})")
    mlp_axes.set_yscale("log")
    mlp_axes.set_xlabel("epoch (GD: 1 step each, others: one per mini-batch of 32)")
    mlp_axes.set_ylabel("training loss")
    mlp_axes.set_title("MLP on digits, same initial weights")
    mlp_axes.legend(fontsize=8, ncol=2, loc="lower left")
    figure.suptitle("Optimizers on the Rosenbrock ravine (top: paths from the same start, star = minimum) "
                    "and on an MLP", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    steps = QUICK_RAVINE_STEPS if quick else RAVINE_STEPS
    epochs = QUICK_EPOCHS if quick else EPOCHS

    # ## The ravine
    paths = {name: ravine_path(settings, steps, RAVINE_GRADIENT_NOISE if name == "SGD" else 0.0, seed)
             for name, settings in RAVINE_SETTINGS.items()}
    ravine_loss = {name: float(rosenbrock(*path[-1])) for name, path in paths.items()}

    # ## The MLP
    train, validation = load_digits_arrays(seed)
    mlp = train_mlp_losses(train, validation, epochs, seed)

    figure = plot(paths, mlp, epochs)
    run_dir.save_figure(figure, "optimizers.png")

    gd_loss = ravine_loss["GD"]
    beats_gd = {name: ravine_loss[name] < gd_loss for name in ("Momentum", "Nesterov", "Adam")}
    supported = all(beats_gd.values())
    findings = {
        "ravine_steps": steps,
        "ravine_final_loss": ravine_loss,
        "ravine_beats_gd": beats_gd,
        "mlp_epochs": epochs,
        "mlp_initial_loss": mlp["GD"]["loss"][0],  # the same weights for every optimizer
        "mlp_final_loss": {name: result["loss"][-1] for name, result in mlp.items()},
        "mlp_val_accuracy": {name: result["val_accuracy"] for name, result in mlp.items()},
    }
    rows = [(name, RAVINE_SETTINGS[name]["learning_rate"], ravine_loss[name], MLP_SETTINGS[name]["learning_rate"],
             mlp[name]["steps_per_epoch"] * epochs, mlp[name]["loss"][-1], mlp[name]["val_accuracy"])
            for name in RAVINE_SETTINGS]
    table = markdown_table(["optimizer", "ravine lr", f"ravine loss after {steps} steps", "MLP lr", "MLP steps",
                            f"MLP train loss after {epochs} epochs", "MLP val accuracy"], rows)
    best_mlp = min(mlp, key=lambda name: mlp[name]["loss"][-1])
    worst_mlp = max(mlp, key=lambda name: mlp[name]["loss"][-1])
    if supported:
        summary = (f"After {steps} steps on the ravine, GD is at f={gd_loss:.3g}; momentum reaches "
                   f"{ravine_loss['Momentum']:.3g}, Nesterov {ravine_loss['Nesterov']:.3g} and Adam "
                   f"{ravine_loss['Adam']:.3g}. On the MLP after {epochs} epochs, {best_mlp} has the lowest "
                   f"training loss ({mlp[best_mlp]['loss'][-1]:.3g}) and {worst_mlp} the highest "
                   f"({mlp[worst_mlp]['loss'][-1]:.3g}).")
    else:
        losing = ", ".join(name for name, beats in beats_gd.items() if not beats)
        summary = (f"Not shown by this run: after {steps} ravine steps, {losing} did not reach a lower loss "
                   f"than plain GD (f={gd_loss:.3g}).")
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
