"""Gradient clipping: a deep network that diverges at a high learning rate trains once its gradients are clipped.

    headstart study gradient-clipping        # about 60 s on 2 busy CPU cores
    headstart study gradient-clipping --quick

An 8-layer ReLU MLP (width 64, `headstart.models.build_mlp`, He initialisation) is trained on
the digits with SGD at a high learning rate (0.3, momentum 0.9), from the same initial
weights and in the same mini-batch order, three times: without clipping, with Keras'
`clipnorm` (each variable's gradient rescaled to norm at most 1) and with `global_clipnorm`
(all gradients together rescaled to norm at most 1). `headstart.callbacks.GradientLogger`
records every layer's gradient norm (as computed, before the optimizer clips it) and the
update actually applied, at every step. A run whose loss becomes NaN or infinite is stopped
there (as Keras' `TerminateOnNaN` would, without its print) and the study records the step.

The lecture's claim: when gradients explode, one huge step throws the weights far away and
training diverges; clipping bounds the size of each step (its direction is kept), so the
same network at the same learning rate trains.
"""

import math
import warnings

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say, verdict

DESCRIPTION = "a deep MLP diverges (NaN) at a high SGD rate without clipping and trains with clipnorm / global_clipnorm"
CLAIM = ("Exploding gradients make training diverge; clipping the gradient norm bounds each step, so the same "
         "network at the same learning rate trains instead.")

# ## Defaults
DEPTH = 8
WIDTH = 64
LEARNING_RATE = 0.3        # SGD with momentum; 0.1 also diverged without clipping, in the third epoch
MOMENTUM = 0.9
CLIP = 1.0
CONDITIONS = {"no clipping": {}, f"clipnorm {CLIP:g}": {"clipnorm": CLIP},
              f"global_clipnorm {CLIP:g}": {"global_clipnorm": CLIP}}
BATCH_SIZE = 64
EPOCHS = 6
QUICK = {"epochs": 2}
# Deciding the claim. Diverged: the loss became NaN or infinite, or grew above this multiple of
# its initial value. Trained: every loss finite and the last epoch's training loss below this
# fraction of chance level, ln 10 (the 2-epoch quick run: 0.34 with global_clipnorm).
DIVERGED = 100.0
TRAINED = 0.6
CHANCE_LOSS = math.log(10)


def train(name, options, initial_weights, data, epochs, log_dir, seed):
    say(f"training with {name} (SGD lr {LEARNING_RATE:g}, momentum {MOMENTUM:g}, {epochs} epochs)")
    import keras

    from headstart.callbacks import GradientLogger
    from headstart.callbacks.gradient_log import read_gradient_log, summarize_layers
    from headstart.models import build_mlp

    x_train, y_train, x_val, y_val = data
    keras.utils.set_random_seed(seed)  # the same mini-batch order in every condition
    model = build_mlp((x_train.shape[1],), 10, hidden_units=(WIDTH,) * DEPTH)
    model.set_weights(initial_weights)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM, **options), loss=loss_function)
    initial_loss = float(loss_function(y_train, model(x_train, training=False)))
    # Every step: the divergence takes a few dozen. The study measures, so no threshold warnings;
    # non-finite norms are flagged whatever the thresholds, and those flags are counted in the findings.
    logger = GradientLogger(log_dir=log_dir, every_n_steps=1, filename=name.replace(" ", "_") + ".csv",
                            vanishing_threshold=1e-30, exploding_threshold=1e30)
    step_losses = []  # Keras' running mean of the epoch's loss after each step

    def record_step(batch, logs):
        step_losses.append(float(logs["loss"]))
        if not math.isfinite(step_losses[-1]):
            # What Keras' TerminateOnNaN does, without its print (which --quiet could not silence).
            model.stop_training = True
            say(f"{name}: the loss became {step_losses[-1]} at step {len(step_losses)}; training stopped")

    recorder = keras.callbacks.LambdaCallback(on_train_batch_end=record_step)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="GradientLogger: exploding gradients")
        history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
                            callbacks=[logger, recorder])
    summaries = summarize_layers(read_gradient_log(logger.log_path))
    layers = list(dict.fromkeys(summary["layer"] for summary in summaries))
    steps = sorted({summary["step"] for summary in summaries})
    grad_norms = np.full((len(layers), len(steps)), np.nan)
    update_norms = np.full((len(layers), len(steps)), np.nan)
    for summary in summaries:
        cell = layers.index(summary["layer"]), steps.index(summary["step"])
        grad_norms[cell], update_norms[cell] = summary["grad_norm"], summary["update_norm"]
    non_finite = [step for step, loss in enumerate(step_losses) if not math.isfinite(loss)]
    finite_model = all(np.all(np.isfinite(weights)) for weights in model.get_weights())
    val_accuracy = (float(np.mean(np.argmax(model.predict(x_val, verbose=0), axis=-1) == y_val))
                    if finite_model else math.nan)
    return {"initial_loss": initial_loss, "step_losses": np.array(step_losses),
            "epoch_losses": [float(loss) for loss in history.history["loss"]],
            "nan_step": non_finite[0] if non_finite else None, "steps_run": len(step_losses),
            "layers": layers, "steps": steps, "grad_norms": grad_norms, "update_norms": update_norms,
            "global_grad_norm": np.sqrt(np.sum(grad_norms ** 2, axis=0)),
            "global_update_norm": np.sqrt(np.sum(update_norms ** 2, axis=0)),
            "exploding_flags": len(logger.flags), "val_accuracy": val_accuracy}


def plot(records, epochs):
    plt = pyplot()
    figure, (loss_axes, grad_axes, update_axes) = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    for index, (name, record) in enumerate(records.items()):
        color = f"C{index}"
        losses = record["step_losses"]
        loss_axes.plot(np.arange(1, len(losses) + 1), losses, color=color,
                       label=f"{name}: " + (f"NaN at step {record['nan_step'] + 1}" if record["nan_step"] is not None
                                            else f"final epoch loss {record['epoch_losses'][-1]:.2f}"))
        if record["nan_step"] is not None:
            finite = losses[np.isfinite(losses)]
            loss_axes.plot([record["nan_step"] + 1], [finite.max() if len(finite) else CHANCE_LOSS], color=color,
                           marker="X", markersize=12, linestyle="none")
        steps = np.array(record["steps"]) + 1
        for layer in range(len(record["layers"])):
            grad_axes.plot(steps, record["grad_norms"][layer], color=color, linewidth=0.6, alpha=0.35)
        grad_axes.plot(steps, record["global_grad_norm"], color=color, linewidth=1.8, label=f"{name}: all layers")
        update_axes.plot(steps, record["global_update_norm"], color=color, linewidth=1.5, label=name)
    loss_axes.axhline(CHANCE_LOSS, color="grey", linestyle=":", linewidth=1)
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss (Keras' running mean over the epoch)")
    loss_axes.set_title("Loss (X: the loss became NaN, training stopped)", fontsize=10)
    loss_axes.legend(fontsize=8)
    grad_axes.axhline(CLIP, color="black", linestyle="--", linewidth=1, label=f"clip norm {CLIP:g}")
    grad_axes.set_yscale("log")
    grad_axes.set_xlabel("step")
    grad_axes.set_ylabel("gradient norm before clipping (GradientLogger)")
    grad_axes.set_title("Gradient norm: thin lines per layer, thick all layers", fontsize=10)
    grad_axes.legend(fontsize=8)
    update_axes.set_yscale("log")
    update_axes.set_xlabel("step")
    update_axes.set_ylabel("norm of the update applied (all layers)")
    update_axes.set_title("Step size: clipping bounds it (momentum adds up to 10x)", fontsize=10)
    update_axes.legend(fontsize=8)
    for axis in (loss_axes, grad_axes, update_axes):
        axis.grid(alpha=0.3)
    figure.suptitle(f"{DEPTH}-layer ReLU MLP (width {WIDTH}) on digits, SGD lr {LEARNING_RATE:g} momentum "
                    f"{MOMENTUM:g}, same initial weights, {epochs} epochs", fontsize=12)
    return figure


def diverged(record):
    finite = record["step_losses"][np.isfinite(record["step_losses"])]
    return record["nan_step"] is not None or (len(finite) > 0 and finite.max() > DIVERGED * record["initial_loss"])


def trained(record, epochs):
    return (record["nan_step"] is None and len(record["epoch_losses"]) == epochs
            and record["epoch_losses"][-1] < TRAINED * CHANCE_LOSS)


def run(run_dir, *, quick=False, seed=0):
    import keras

    from headstart.models import build_mlp

    epochs = QUICK["epochs"] if quick else EPOCHS
    data = digits_arrays(seed)
    keras.utils.set_random_seed(seed)
    initial_weights = build_mlp((data[0].shape[1],), 10, hidden_units=(WIDTH,) * DEPTH).get_weights()
    log_dir = run_dir.file("gradients")
    records = {name: train(name, options, initial_weights, data, epochs, log_dir, seed)
               for name, options in CONDITIONS.items()}
    run_dir.save_figure(plot(records, epochs), "gradient_clipping.png")

    # ## What the run shows
    unclipped, per_variable, clipped = (records[name] for name in CONDITIONS)
    checks = {
        "unclipped_diverges": diverged(unclipped),
        "global_clipnorm_trains": trained(clipped, epochs),
        # Clipping was doing something: the gradients it got were above the clip norm.
        "clipping_was_active": bool(np.nanmax(clipped["global_grad_norm"]) > CLIP),
    }

    def largest_finite(values):
        finite = values[np.isfinite(values)]
        return float(finite.max()) if len(finite) else math.nan

    findings = {
        "depth": DEPTH, "width": WIDTH, "learning_rate": LEARNING_RATE, "momentum": MOMENTUM, "clip": CLIP,
        "epochs": epochs, "checks": checks,
        "initial_loss": unclipped["initial_loss"],
        # Shown for comparison, not part of the claim: per-variable clipping lets the whole step
        # grow with the number of variables (18 here, so up to sqrt(18) x the clip norm).
        "clipnorm_diverges": diverged(per_variable), "clipnorm_trains": trained(per_variable, epochs),
        "nan_step": {name: record["nan_step"] for name, record in records.items()},
        "steps_run": {name: record["steps_run"] for name, record in records.items()},
        "epoch_losses": {name: record["epoch_losses"] for name, record in records.items()},
        "largest_finite_gradient_norm": {name: largest_finite(record["global_grad_norm"])
                                         for name, record in records.items()},
        "median_gradient_norm": {name: float(np.nanmedian(record["global_grad_norm"]))
                                 for name, record in records.items()},
        "largest_update_norm": {name: largest_finite(record["global_update_norm"]) for name, record in records.items()},
        # The first step has no momentum yet: its update is the learning rate times the (clipped) gradient.
        "first_step": {name: {"grad_norm": float(record["global_grad_norm"][0]),
                              "update_norm": float(record["global_update_norm"][0])}
                       for name, record in records.items()},
        "non_finite_gradient_flags": {name: record["exploding_flags"] for name, record in records.items()},
        "val_accuracy": {name: record["val_accuracy"] for name, record in records.items()},
    }
    rows = [(name, "never" if record["nan_step"] is None else f"step {record['nan_step'] + 1}",
             record["steps_run"], largest_finite(record["global_grad_norm"]),
             largest_finite(record["global_update_norm"]),
             record["epoch_losses"][-1] if record["nan_step"] is None else "NaN", record["val_accuracy"])
            for name, record in records.items()]
    table = markdown_table(("SGD", "loss NaN at", "steps run", "largest gradient norm (finite)",
                            "largest update norm", "final epoch loss", "val accuracy"), rows)
    nan_at = "never" if unclipped["nan_step"] is None else f"at step {unclipped['nan_step'] + 1}"
    measured = (f"without clipping the loss became NaN {nan_at} (largest finite gradient norm "
                f"{largest_finite(unclipped['global_grad_norm']):.3g}); with global_clipnorm {CLIP:g} the final epoch "
                f"loss was {clipped['epoch_losses'][-1]:.2f} (validation accuracy {clipped['val_accuracy']:.2f}); "
                f"per-variable clipnorm {CLIP:g} "
                + ("diverged too" if diverged(per_variable) else "kept the loss finite")
                + (" and trained" if trained(per_variable, epochs) else " but did not learn")
                + f" (final epoch loss {per_variable['epoch_losses'][-1]:.2f}, validation accuracy "
                f"{per_variable['val_accuracy']:.2f})")
    supported, summary = verdict(checks, measured, "Clipping shown")
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
