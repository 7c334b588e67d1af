"""The one training engine: compile, phases of `fit`, and the two-phase fine-tune.

A run is a list of phases; each phase sets which weights train, recompiles (Keras only
sees a change of `trainable` after `compile`), and calls `fit` with epochs numbered on
from the previous phase, so the whole run has one history. `train` is a single phase
with everything trainable; `fine_tune` is the Keras guide's recipe: the head on a frozen
backbone, then part or all of the backbone at a lower learning rate.
"""

import math
import time
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from callbacks import EarlyStopping, GradientLogger, HistoryWriter
from models.freezing import freeze, unfreeze

STRATEGIES = ("default", "mirrored", "multiworker")

# AdamW decays every variable it updates unless told otherwise; biases and batch-norm
# scales/offsets are conventionally excluded (decaying them only hurts).
NO_DECAY_NAMES = ["bias", "gamma", "beta"]


def make_strategy(name="default"):
    """The `tf.distribute` strategy named on the command line."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def compile_model(model, *, learning_rate, weight_decay=0.0, num_classes=None):
    """Compile for classification on logits: AdamW (decoupled weight decay), cross-entropy, accuracy."""
    num_classes = num_classes or model.output_shape[-1]
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    if num_classes == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


@dataclass
class Phase:
    """One `fit` call: a name, its epochs, its learning rate and what trains in it."""

    name: str
    epochs: int
    learning_rate: float
    set_trainable: callable  # model -> None, called before compiling


@dataclass
class TrainingResult:
    model: keras.Model
    history: list = field(default_factory=list)     # one dict per epoch: epoch, phase, logged metrics
    phases: list = field(default_factory=list)      # one dict per phase: name, epochs, seconds, stop
    metrics: dict = field(default_factory=dict)     # evaluation of the best weights
    best: dict = field(default_factory=dict)        # monitor, value, epoch, phase


@dataclass
class TrainingOptions:
    weight_decay: float = 1e-4
    patience: int = 5
    monitor: str = "val_loss"
    log_gradients: bool = False
    verbose: int = 0


def run_phases(build_model, data, phases, options=None, *, strategy="default", run_dir=None,
               extra_callbacks=()):
    """Train a model built by `build_model()` through `phases`, keeping the best weights seen.

    The model is built and compiled inside the strategy's scope. After each phase the
    early-stopping callback has restored that phase's best weights; at the end the
    best weights over all phases are restored, and the model is evaluated on the test
    split (or the validation split when there is none).
    """
    options = options or TrainingOptions()
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    with strategy.scope():
        model = build_model()
    num_classes = model.output_shape[-1]

    early_stopping = EarlyStopping(monitor=options.monitor, patience=options.patience,
                                   restore_best_weights=True)
    callbacks = [early_stopping, *extra_callbacks]
    if run_dir is not None:
        callbacks.append(HistoryWriter(run_dir.file("history.csv")))
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir.file("tensorboard"))))
        if options.log_gradients:
            callbacks.append(GradientLogger(log_dir=run_dir.path,
                                            tensorboard_dir=str(run_dir.file("tensorboard/gradients"))))

    result = TrainingResult(model=model)
    best_weights, best_value = None, None
    sign = -1.0 if "acc" in options.monitor else 1.0  # lower is better after the sign
    epoch = 0
    for phase in phases:
        if phase.epochs == 0:
            continue
        with strategy.scope():
            phase.set_trainable(model)
            compile_model(model, learning_rate=phase.learning_rate, weight_decay=options.weight_decay,
                          num_classes=num_classes)
        started = time.perf_counter()
        history = model.fit(data.train, validation_data=data.val, initial_epoch=epoch,
                            epochs=epoch + phase.epochs, callbacks=callbacks, verbose=options.verbose,
                            shuffle=False)  # the tf.data pipeline shuffles
        seconds = time.perf_counter() - started
        epochs_run = len(history.epoch)
        for index, epoch_number in enumerate(history.epoch):
            row = {"epoch": epoch_number + 1, "phase": phase.name}
            row.update({key: float(values[index]) for key, values in history.history.items()})
            result.history.append(row)
        result.phases.append({
            "name": phase.name, "first_epoch": epoch + 1, "epochs": epochs_run,
            "learning_rate": phase.learning_rate, "seconds": round(seconds, 2),
            "seconds_per_epoch": round(seconds / max(epochs_run, 1), 3),
            "trainable_weights": len(model.trainable_weights),
            "stop": early_stopping.summary(),
        })
        epoch += epochs_run
        phase_best = early_stopping.best_value
        if phase_best is not None and math.isfinite(phase_best) and (
                best_value is None or sign * phase_best < sign * best_value):
            best_value = phase_best
            best_weights = [weight.numpy() for weight in model.weights]
            result.best = {"monitor": options.monitor, "value": float(phase_best),
                           "epoch": early_stopping.best_epoch, "phase": phase.name}
        if early_stopping.stop_reason in ("non_finite", "diverged"):
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    evaluation_split = data.test if data.test is not None else data.val
    result.metrics = {
        f"{'test' if data.test is not None else 'val'}_{key}": float(value)
        for key, value in model.evaluate(evaluation_split, return_dict=True, verbose=0).items()
    }
    return result


def train(build_model, data, *, epochs, learning_rate, options=None, **kwargs):
    """One phase with every weight trainable (training from scratch, or pretraining)."""
    def make_all_trainable(model):
        # Not `model.trainable = True`: Keras skips that when the flag is already True,
        # leaving layers frozen one by one still frozen; `unfreeze` sets every layer.
        unfreeze(model, batch_norm="train")

    return run_phases(build_model, data, [Phase("train", epochs, learning_rate, make_all_trainable)],
                      options, **kwargs)


def fine_tune(build_model, data, *, head_epochs, finetune_epochs, learning_rate, finetune_learning_rate,
              unfreeze_layers="all", batch_norm="frozen", options=None, **kwargs):
    """Two phases: the head on a frozen backbone, then the unfrozen part of the backbone too.

    Args:
        build_model: zero-argument callable returning a model with `backbone` and `head`
            sub-models (built inside the distribution strategy's scope).
        data: a `recipes.data.DataSplits`.
        head_epochs: epochs of phase 1 (backbone frozen).
        finetune_epochs: epochs of phase 2; 0 stops after phase 1.
        learning_rate: phase 1 learning rate.
        finetune_learning_rate: phase 2 learning rate, usually 10x to 100x lower.
        unfreeze_layers: `"all"`, an int (that many top layers of the backbone), or a
            block or layer name (that layer and everything above it).
        batch_norm: `"frozen"` (batch norm stays in inference mode when unfrozen, the
            Keras guide's rule for small datasets) or `"train"`.
        options: `TrainingOptions`.
    """
    def head_only(model):
        unfreeze(model.get_layer("head"), batch_norm="train")
        freeze(model.get_layer("backbone"))

    def head_and_backbone(model):
        unfreeze(model.get_layer("head"), batch_norm="train")
        backbone = model.get_layer("backbone")
        if unfreeze_layers == "all":
            unfreeze(backbone, batch_norm=batch_norm)
        elif isinstance(unfreeze_layers, int):
            unfreeze(backbone, top_layers=unfreeze_layers, batch_norm=batch_norm)
        else:
            unfreeze(backbone, from_layer=unfreeze_layers, batch_norm=batch_norm)

    phases = [Phase("head", head_epochs, learning_rate, head_only),
              Phase("finetune", finetune_epochs, finetune_learning_rate, head_and_backbone)]
    return run_phases(build_model, data, phases, options, **kwargs)
