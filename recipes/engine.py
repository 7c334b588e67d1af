"""The one training engine: compile, phases of `fit`, and the two-phase fine-tune.

A run is a list of phases; each phase sets which weights train, recompiles (Keras only
sees a change of `trainable` after `compile`), and calls `fit` with epochs numbered on
from the previous phase, so the whole run has one history. `train` is a single phase
with everything trainable; `fine_tune` is the Keras guide's recipe: the head on a frozen
backbone, then part or all of the backbone at a lower learning rate.
"""

import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from headstart.callbacks import EarlyStopping, GradientLogger, GradualUnfreezing, HistoryWriter, ProgressLogger
from headstart.callbacks.history_writer import write_history
from headstart.models import losses, schedules
from headstart.models import lora as lora_module
from headstart.models.freezing import freeze, unfreeze
from headstart.models.layer_rates import with_layer_rates
from headstart.recipes import distribution
from headstart.recipes.checkpoint import TrainingCheckpoint, optimizer_variables, resume_note
from headstart.recipes.errors import TrainingDiverged

# AdamW decays every variable it updates unless told otherwise; biases and batch-norm
# scales/offsets are conventionally excluded (decaying them only hurts).
NO_DECAY_NAMES = ["bias", "gamma", "beta"]
# A phase budgeted in optimizer steps checks validation (early stopping, the checkpoint,
# the progress line) at most this many times: when the training split has fewer batches
# than steps / this, one epoch repeats it (Keras' `steps_per_epoch` on repeated data), so
# 500 steps on 25 images are 25 epochs of 20 steps, not 500 epochs of one.
MAX_EPOCHS_PER_STEP_BUDGET = 25


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow; with `deterministic`, also make TensorFlow's ops
    deterministic, so two runs give bit-identical weights (at a cost in speed: see the README)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(name="default"):
    """The `tf.distribute` strategy named on the command line.

    Call it before TensorFlow runs anything: "multiworker" (one per process, see
    `distribution.multi_worker_strategy`) configures collective ops, which TensorFlow
    allows only at startup.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return distribution.multi_worker_strategy()
    return tf.distribute.get_strategy()



def compile_model(model, *, learning_rate, weight_decay=0.0, num_classes=None, task="classification",
                  layer_rates=None, label_smoothing=0.0, ema=None, grad_accum=None, soft_labels=False):
    """Compile with AdamW (decoupled weight decay) for a task.

    `"classification"`: cross-entropy on logits and accuracy (binary when the model has
    one output). `"reconstruction"` (autoencoders): mean squared error. `layer_rates`
    (`{"decay": ..., "groups": ...}`) gives each layer group its own multiple of the rate
    (see `headstart.models.layer_rates`). `learning_rate` may be a Keras schedule.

    `label_smoothing`: multi-class cross-entropy against `(1 - s) * one_hot + s / classes`
    (`headstart.models.losses.SmoothedCrossentropy`). `ema`: keep an exponential moving
    average of the weights with this decay (Keras' `use_ema`; `run_phases` swaps it in for
    validation and keeps it). `grad_accum`: apply the mean gradient of this many batches
    (Keras' `gradient_accumulation_steps`). `soft_labels`: the training labels are rows of
    class probabilities (MixUp / CutMix), validation's integers; loss and accuracy take both.
    """
    num_classes = num_classes or model.output_shape[-1]
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay,
                                       use_ema=ema is not None, ema_momentum=0.99 if ema is None else ema,
                                       gradient_accumulation_steps=grad_accum if grad_accum and grad_accum > 1 else None)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    if layer_rates is not None:
        optimizer = with_layer_rates(optimizer, model, decay=layer_rates.get("decay"),
                                     groups=layer_rates.get("groups"))
    if task == "reconstruction":
        loss, metrics = keras.losses.MeanSquaredError(), []
    elif num_classes == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
    elif label_smoothing or soft_labels:
        loss = losses.SmoothedCrossentropy(num_classes, label_smoothing)
        metrics = [losses.Accuracy(num_classes) if soft_labels else keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


@dataclass
class Phase:
    """One `fit` call: a name, its epochs, its learning rate and what trains in it.

    `head_only` says the backbone is frozen in this phase, so the head may train on
    cached backbone features instead of images.

    The budget is `epochs` (passes over the training split), or `steps` (optimizer steps,
    the same on any data size: see `phase_budget`) when given. `schedule` and `warmup`
    shape the learning rate over the phase's steps (`headstart.models.schedules`).
    """

    name: str
    epochs: int
    learning_rate: float
    set_trainable: callable  # model -> None, called before compiling
    head_only: bool = False
    layer_rates: dict = None      # {"decay": ..., "groups": ...}: per-group multiples of the rate
    callbacks: callable = None    # first epoch of the phase -> callbacks for this phase only
    steps: int = None             # budget in optimizer steps, instead of `epochs`
    schedule: str = "constant"    # or "cosine", "onecycle"
    warmup: float = None          # fraction of the phase's steps (None: the schedule's default)


@dataclass
class Budget:
    """A phase's budget in Keras' terms: `epochs` of `epoch_steps` batches, each `passes` passes
    over the training split; `batches` in all (the last epoch may end early to hit it exactly),
    one optimizer step per `accumulate` of them."""

    epochs: int
    passes: int
    epoch_steps: int   # None when the training split's length is unknown (budget in epochs only)
    batches: int
    accumulate: int = 1

    @property
    def steps(self):
        """Optimizer steps in the phase (what a schedule counts)."""
        return None if self.batches is None else self.batches // self.accumulate


def phase_budget(phase, batches, accumulate=1):
    """The `Budget` of `phase` when one pass over the training split is `batches` batches and an
    optimizer step takes `accumulate` of them (gradient accumulation). `phase.steps` counts
    optimizer steps."""
    if phase.steps is None:
        return Budget(phase.epochs, 1, batches, None if batches is None else phase.epochs * batches, accumulate)
    if batches is None:
        raise ValueError(f"phase {phase.name}: a budget in steps needs a training split of known length "
                         "(tf.data cardinality); give the budget in epochs")
    total = phase.steps * accumulate
    passes = max(1, math.ceil(total / (MAX_EPOCHS_PER_STEP_BUDGET * batches)))
    epoch_steps = passes * batches
    return Budget(math.ceil(total / epoch_steps), passes, epoch_steps, total, accumulate)


@dataclass
class TrainingResult:
    model: keras.Model
    history: list = field(default_factory=list)     # one dict per epoch: epoch, phase, logged metrics
    phases: list = field(default_factory=list)      # one dict per phase: name, epochs, seconds, stop
    metrics: dict = field(default_factory=dict)     # evaluation of the best weights
    notes: list = field(default_factory=list)       # what the engine decided and why, for the user
    best: dict = field(default_factory=dict)        # monitor, value, epoch, phase

    @property
    def accuracy(self):
        """Accuracy of the best weights on the test split (the validation split if there is none)."""
        return next(value for key, value in self.metrics.items() if key.endswith("accuracy"))


PROGRESS = ("lines", "keras", "quiet")


@dataclass
class TrainingOptions:
    """How a run trains and what it prints.

    `progress`: `"lines"` (the default) prints one line per epoch (phase, epoch k/n, loss,
    validation metrics, seconds, time left: `headstart.callbacks.ProgressLogger`) and a
    line before long steps (caching features), with a live line within the epoch on a
    terminal; `"keras"` leaves the epochs to Keras' own progress bar (`fit(verbose=1)`);
    `"quiet"` prints nothing. A `verbose` other than 0 is passed to `fit` as it is and
    replaces our epoch lines, as `"keras"` does.
    """

    weight_decay: float = 1e-4
    patience: int = 5
    monitor: str = "val_loss"
    log_gradients: bool = False
    verbose: int = 0               # Keras' `fit(verbose=...)`
    progress: str = "lines"        # or "keras", "quiet": see above
    task: str = "classification"   # or "reconstruction" (autoencoders: data yields (image, image))
    feature_cache: bool = True     # head-only phases train on cached backbone features when valid
    cache_dir: str = None          # None: features in memory; a folder: on disk (tf.data file cache)
    label_smoothing: float = 0.0   # see `compile_model`
    ema: float = None              # decay of the weights' moving average; None: no average
    grad_accum: int = None         # batches per optimizer step (their mean gradient)
    class_weight: dict = None      # {label: weight} for the training loss (Keras' `fit(class_weight=...)`)


def run_phases(build_model, data, phases, options=None, *, strategy="default", run_dir=None,
               extra_callbacks=(), features=None, checkpoint_dir=None):
    """Train a model built by `build_model()` through `phases`, keeping the best weights seen.

    The model is built and compiled inside the strategy's scope. After each phase the
    early-stopping callback has restored that phase's best weights; at the end the
    best weights over all phases are restored, and the model is evaluated on the test
    split (or the validation split when there is none).

    `features`: a `FeatureCache` of this data through this (frozen, pretrained) backbone,
    made earlier and shared (a tuner search computes it once for all its trials).

    `checkpoint_dir`: save the whole training state there after every epoch (see
    `headstart.recipes.checkpoint`); when it already holds a checkpoint, continue from it: finished
    phases are skipped, the interrupted phase goes on from its last completed epoch with
    its layers frozen as they were, its optimizer state and its early-stopping counters.

    A loss that becomes NaN or infinite ends the run at once with `TrainingDiverged`,
    after the checkpoint of the last good epoch (and the best weights in it) is saved.
    """
    options = options or TrainingOptions()
    if options.progress not in PROGRESS:
        raise ValueError(f"TrainingOptions.progress must be one of {', '.join(PROGRESS)}, got {options.progress!r}")
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    with strategy.scope():
        model = build_model()
    distribution.synchronize_batch_norm(model, strategy)
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
    run = _RunState()
    checkpoint = TrainingCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        run.restore(saved, result, model)
        fallback = resume_note(checkpoint, saved[0])
        if fallback:
            print(f"headstart: warning: {fallback}", file=sys.stderr, flush=True)
        result.notes.append(f"resumed after epoch {run.epoch} (phase {phases[run.phase_index].name})")
        if run_dir is not None:
            # The checkpoint is the history's source of truth: history.csv may have lost rows
            # (removed, or older than a damaged save) or hold epochs the checkpoint has not.
            write_history(run_dir.file("history.csv"), history_rows(result.history + run.phase_rows))

    batches = train_batches(data)
    for index, phase in enumerate(phases):
        budget = phase_budget(phase, batches, options.grad_accum or 1)
        if budget.epochs == 0 or index < run.phase_index or (index == run.phase_index and run.phase_done):
            continue
        resuming = saved is not None and index == run.phase_index
        # Over the phase's own steps: each phase compiles a new optimizer, whose `iterations`
        # count this phase's steps (restored on resume, so the schedule goes on where it was).
        learning_rate = schedules.make(phase.schedule, phase.learning_rate, budget.steps or 0, phase.warmup)
        tools = dict(label_smoothing=options.label_smoothing, ema=options.ema, grad_accum=options.grad_accum,
                     soft_labels=bool(getattr(getattr(data, "spec", None), "mixes", False)))
        with strategy.scope():
            phase.set_trainable(model)
            compile_model(model, learning_rate=learning_rate, weight_decay=options.weight_decay,
                          num_classes=num_classes, task=options.task, layer_rates=phase.layer_rates, **tools)
        fit_model, train_data, val_data = model, data.train, data.val
        epochs_of = getattr(data, "train_epochs", None)   # training order fixed by (seed, epoch): see recipes.data.pipeline
        use_cache = phase.head_only and options.feature_cache
        refusal = feature_cache_refusal(data) if use_cache else None
        if refusal:
            result.notes.append(f"feature cache off in phase {phase.name}: {refusal}")
            use_cache = False
        if use_cache:
            if features is None:
                say(options, f"{phase.name}  computing the frozen backbone's features once (train and "
                             f"validation splits); the head trains on them")
                features = FeatureCache(model.get_layer("backbone"), data, options.cache_dir)
            fit_model, train_data, val_data = model.get_layer("head"), features.train, features.val
            epochs_of = features.train_epochs
            with strategy.scope():
                compile_model(fit_model, learning_rate=learning_rate,
                              weight_decay=options.weight_decay, num_classes=num_classes, **tools)
        first_epoch = run.phase_first_epoch if resuming else run.epoch
        if resuming:
            with strategy.scope():
                _restore_optimizer(fit_model, saved[1]["optimizer"])
            early_stopping.resume_from(run.early_stopping, saved[1]["phase_best"])
        run.start_phase(index, first_epoch)
        phase_callbacks = phase.callbacks(first_epoch) if phase.callbacks else []
        recorder = _EpochRecorder(checkpoint, run, result, early_stopping, model, fit_model, phase.name)
        # First, so validation, early stopping's best weights and the checkpoint see the average.
        averaging = [] if options.ema is None else [_SwapEMAWeights(resumed=resuming)]
        # Last, so an epoch's seconds include the checkpoint and history the callbacks before it write.
        progress = [ProgressLogger(phase.name, budget.epochs, first_epoch)] if epoch_lines(options) else []
        end_epoch = first_epoch + budget.epochs
        exact = [] if budget.batches is None or budget.batches % budget.epoch_steps == 0 else [
            _StepBudget(budget.batches, budget.epoch_steps, first_epoch)]
        started = time.perf_counter()
        if resuming and run.early_stopping["stop_reason"] is not None:
            # Stopped after its last saved epoch, killed before the phase was closed: only close it.
            if early_stopping.restore_best_weights and saved[1]["phase_best"] is not None:
                fit_model.set_weights(saved[1]["phase_best"])
            early_stopping.set_model(fit_model)
            early_stopping.on_train_begin()
        else:
            # Callbacks are built when the phase starts: early stopping may have shortened the one before.
            steps = None
            if epochs_of is not None and run.epoch < end_epoch:   # else: killed after its last epoch
                train_data = epochs_of(run.epoch, end_epoch, budget.passes) if budget.passes > 1 else epochs_of(
                    run.epoch, end_epoch)   # hand-made `train_epochs` may take two arguments
                steps = budget.epoch_steps
            elif budget.passes > 1:
                train_data, steps = train_data.repeat(), budget.epoch_steps
            fit_model.fit(train_data, validation_data=val_data, initial_epoch=run.epoch, steps_per_epoch=steps,
                          epochs=end_epoch,
                          callbacks=[*averaging, *callbacks, *phase_callbacks, *exact, recorder, *progress],
                          class_weight=options.class_weight,
                          verbose=keras_verbose(options), shuffle=False)  # the tf.data pipeline shuffles
        run.seconds += time.perf_counter() - started
        epochs_run = run.epoch - first_epoch
        result.phases.append({
            "name": phase.name, "first_epoch": first_epoch + 1, "epochs": epochs_run,
            "steps": None if budget.batches is None else min(budget.batches, epochs_run * budget.epoch_steps)
            // budget.accumulate,
            "batches_per_epoch": budget.epoch_steps,
            "budget": {"steps": phase.steps} if phase.steps is not None else {"epochs": phase.epochs},
            "learning_rate": phase.learning_rate, "schedule": phase.schedule,
            "warmup_steps": schedules.warmup_steps(phase.schedule, phase.warmup, budget.steps or 0),
            "seconds": round(run.seconds, 2),
            "seconds_per_epoch": round(run.seconds / max(epochs_run, 1), 3),
            "trainable_weights": len(model.trainable_weights),
            "feature_cache": use_cache,
            "feature_cache_seconds": round(features.seconds, 2) if use_cache else None,
            "stop": early_stopping.summary(),
        })
        run.keep_if_best(early_stopping, model, options.monitor, phase.name, result)
        if early_stopping.stop_reason == "non_finite":
            # The checkpoint of the last good epoch stays as it is (resumable); the model
            # goes back to the best weights seen, for the recipe to save.
            if run.best_weights is not None:
                model.set_weights(run.best_weights)
            raise diverged(early_stopping, phase.name, phase.learning_rate, checkpoint, result)
        run.phase_done = True
        if checkpoint is not None:
            run.save(checkpoint, result, early_stopping, model, fit_model=None)
        if early_stopping.stop_reason == "diverged":
            break
    if run.best_weights is not None:
        model.set_weights(run.best_weights)
    if not model.compiled:   # resumed after the last phase had ended: only the evaluation is left
        with strategy.scope():
            compile_model(model, learning_rate=phases[-1].learning_rate, num_classes=num_classes, task=options.task)
    evaluation_split = data.test if data.test is not None else data.val
    result.metrics = {
        f"{'test' if data.test is not None else 'val'}_{key}": float(value)
        for key, value in model.evaluate(evaluation_split, return_dict=True, verbose=0).items()
    }
    return result


def history_rows(rows):
    """The engine's history rows (epochs counted from 1, with the phase) as `HistoryWriter` writes them."""
    return [{"epoch": row["epoch"] - 1, **{key: value for key, value in row.items() if key not in ("epoch", "phase")}}
            for row in rows]


def epoch_lines(options):
    """Whether the engine prints its own line per epoch (not when Keras prints its progress bar)."""
    return options.progress == "lines" and not options.verbose


def keras_verbose(options):
    """The `verbose` for Keras' `fit`: the options' own, or 1 (the progress bar) with `progress="keras"`."""
    return options.verbose or (1 if options.progress == "keras" else 0)


def say(options, message):
    """A line about what the run is doing (before a long step), unless it is quiet."""
    if options.progress != "quiet":
        print(message, flush=True)


def diverged(early_stopping, phase, learning_rate, checkpoint, result):
    """The `TrainingDiverged` error for a run early stopping stopped on a non-finite loss."""
    epoch = early_stopping.stopped_epoch + 1
    step = early_stopping.stopped_step
    where = f"epoch {epoch}" + (f", step {step + 1}" if step is not None else "")
    kept = "" if checkpoint is None or not checkpoint.exists() else (
        f"; the checkpoint of the last good epoch is kept in {checkpoint.folder}")
    return TrainingDiverged(f"training diverged in phase {phase} at {where} ({early_stopping._detail}): "
                            f"try a lower learning rate than {learning_rate:g}{kept}",
                            epoch=epoch, step=step, phase=phase, result=result)


class _RunState:
    """Where a run is, across phases: what the checkpoint saves and a resumed run starts from."""

    def __init__(self):
        self.phase_index, self.phase_first_epoch, self.phase_done = 0, 0, False
        self.epoch = 0                 # epochs completed over all phases
        self.seconds = 0.0             # training time of the current phase
        self.phase_rows = []           # this phase's history rows so far
        self.best_value, self.best_weights = None, None
        self.early_stopping = None

    def start_phase(self, index, first_epoch):
        if index != self.phase_index or self.phase_done:
            self.seconds, self.phase_rows = 0.0, []
        self.phase_index, self.phase_first_epoch, self.phase_done = index, first_epoch, False
        self.epoch = max(self.epoch, first_epoch)

    def end_epoch(self, epoch, logs, phase, result):
        self.epoch = epoch + 1
        self.phase_rows.append({"epoch": epoch + 1, "phase": phase,
                                **{key: float(value) for key, value in (logs or {}).items()}})

    def keep_if_best(self, early_stopping, model, monitor, phase, result):
        result.history.extend(self.phase_rows)
        self.phase_rows = []
        phase_best = early_stopping.best_value
        sign = -1.0 if early_stopping.summary()["mode"] == "max" else 1.0  # lower is better after the sign
        if phase_best is not None and math.isfinite(phase_best) and (
                self.best_value is None or sign * phase_best < sign * self.best_value):
            self.best_value = phase_best
            self.best_weights = [weight.numpy() for weight in model.weights]
            result.best = {"monitor": monitor, "value": float(phase_best),
                           "epoch": early_stopping.best_epoch + 1, "phase": phase}

    def save(self, checkpoint, result, early_stopping, model, fit_model):
        state = {"phase_index": self.phase_index, "phase_first_epoch": self.phase_first_epoch,
                 "phase_done": self.phase_done, "epoch": self.epoch, "seconds": self.seconds,
                 "phase_rows": self.phase_rows, "best_value": self.best_value,
                 "early_stopping": early_stopping.state(),
                 "history": result.history, "phases": result.phases, "best": result.best}
        arrays = {"model": [weight.numpy() for weight in model.weights],
                  "seeds": [variable.numpy() for variable in _seed_states(model)],
                  "optimizer": None if fit_model is None else
                  [variable.numpy() for variable in optimizer_variables(fit_model.optimizer)],
                  "phase_best": None if self.phase_done else early_stopping.best_weights,
                  "run_best": self.best_weights}
        checkpoint.save(state, arrays)

    def restore(self, saved, result, model):
        state, arrays = saved
        self.phase_index, self.phase_first_epoch = state["phase_index"], state["phase_first_epoch"]
        self.phase_done, self.epoch, self.seconds = state["phase_done"], state["epoch"], state["seconds"]
        self.phase_rows, self.best_value = state["phase_rows"], state["best_value"]
        self.early_stopping = state["early_stopping"]
        self.best_weights = arrays["run_best"]
        result.history, result.phases, result.best = state["history"], state["phases"], state["best"]
        model.set_weights(arrays["model"])
        for variable, value in zip(_seed_states(model), arrays["seeds"] or ()):
            variable.assign(value)


class _EpochRecorder(keras.callbacks.Callback):
    """Last callback of a phase's `fit`: record the epoch and, with a checkpoint, save it."""

    def __init__(self, checkpoint, run, result, early_stopping, model, fit_model, phase):
        super().__init__()
        self.checkpoint, self.run, self.result = checkpoint, run, result
        self.early_stopping, self.whole_model, self.fit_model, self.phase = early_stopping, model, fit_model, phase

    def on_epoch_end(self, epoch, logs=None):
        if self.early_stopping.stop_reason == "non_finite":
            return   # this epoch's weights are NaN: the previous checkpoint stays the newest
        self.run.end_epoch(epoch, logs, self.phase, self.result)
        if self.checkpoint is not None:
            self.run.save(self.checkpoint, self.result, self.early_stopping, self.whole_model, self.fit_model)


class _SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights(swap_on_epoch=True)`: the average is in the model from each
    epoch's end (validation, early stopping's best weights, the checkpoint) to the next
    epoch's start. A resumed phase starts from a checkpoint saved that way, so its first
    epoch swaps the trained weights back in first (`resumed`)."""

    def __init__(self, resumed=False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed


class _StepBudget(keras.callbacks.Callback):
    """Ends the phase's last epoch at exactly its budget of batches (Keras checks `stop_training`
    after every batch; validation and the epoch's callbacks still run)."""

    def __init__(self, batches, epoch_steps, first_epoch):
        super().__init__()
        self.steps, self.epoch_steps, self.first_epoch, self.epoch = batches, epoch_steps, first_epoch, first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch - self.first_epoch) * self.epoch_steps + batch + 1 >= self.steps:
            self.model.stop_training = True


def _seed_states(model):
    """The random-seed states of the model's layers (dropout), so a resumed run draws what the
    uninterrupted one would have drawn; `model.weights` leaves them out."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def _restore_optimizer(model, values):
    """Build the optimizer for the model's trainable variables, then load its saved state."""
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = optimizer_variables(optimizer)
    if len(variables) != len(values):
        raise ValueError(f"The checkpoint's optimizer has {len(values)} variables, this one {len(variables)}: "
                         "the run was resumed with different options")
    for variable, value in zip(variables, values):
        variable.assign(value)


def feature_cache_refusal(data):
    """Why the head cannot train on cached features for `data`, or None when it can."""
    spec = getattr(data, "spec", None)
    if spec is not None and (spec.augment or spec.mixes):
        what = "augmentation" if spec.augment else "MixUp / CutMix"
        return (f"{what} changes the backbone's input every epoch (features would be stale); "
                "training through the frozen backbone instead")
    return None


class FeatureCache:
    """The frozen backbone's outputs for the train and validation splits, computed once.

    Each split's batches go through the backbone once, in inference mode, and are
    cached in memory or, with `cache_dir`, in tf.data cache files on disk. The training
    features are then reshuffled every epoch, as the image pipeline does.
    """

    def __init__(self, backbone, data, cache_dir=None):
        started = time.perf_counter()

        @tf.function(reduce_retracing=True)
        def backbone_features(images, labels):
            return backbone(images, training=False), labels

        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # A fresh name per run: tf.data would silently read an older run's complete cache.
        run_id = uuid.uuid4().hex[:8]

        def cached(dataset, split):
            filename = str(Path(cache_dir) / f"features-{split}-{run_id}") if cache_dir else ""
            features = dataset.map(backbone_features).cache(filename)
            for _ in features:  # one pass fills the cache; its time is the cache's cost
                pass
            return features

        spec = getattr(data, "spec", None)
        self.train_epochs = None
        if getattr(data, "train_epochs", None) is not None:
            # One pass in a fixed order (epoch 0's), then each epoch reorders the features
            # by (seed, epoch), as the image pipeline's `train_epochs` does.
            self.train = cached(data.train_epochs(0, 1), "train")
            if spec.shuffle:
                self.train_epochs = self._epochs(self.train.unbatch(), data.num_examples["train"], spec)
            else:
                self.train_epochs = (lambda first_epoch, end_epoch, passes=1:
                                     self.train.repeat((end_epoch - first_epoch) * passes))
        else:
            self.train = cached(data.train, "train")
        if spec is not None and spec.shuffle:
            batch_size = spec.batch_size
            count = data.num_examples["train"]
            # unbatch() forgets the number of batches; Keras needs it to count an epoch.
            self.train = (self.train.unbatch().shuffle(count, seed=spec.seed, reshuffle_each_iteration=True)
                          .batch(batch_size)
                          .apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size))))
        self.train = self.train.prefetch(tf.data.AUTOTUNE)
        self.val = cached(data.val, "val").prefetch(tf.data.AUTOTUNE)
        self.seconds = time.perf_counter() - started

    @staticmethod
    def _epochs(features, count, spec):
        from headstart.recipes.data.pipeline import concatenated, epoch_seed

        def epoch(number, passes):   # as the image pipeline's `train_epochs`
            ordered = features.shuffle(count, seed=epoch_seed(spec.seed, number),
                                       reshuffle_each_iteration=passes > 1).batch(spec.batch_size)
            return ordered if passes == 1 else ordered.repeat(passes)

        return lambda first_epoch, end_epoch, passes=1: concatenated(
            epoch(number, passes) for number in range(first_epoch, end_epoch)).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(data):
    """Batches in one epoch of `data`'s training split."""
    return math.ceil(data.num_examples["train"] / data.spec.batch_size)


def train_batches(data):
    """Batches in one pass over `data`'s training split; None when tf.data does not know."""
    if getattr(data, "spec", None) is not None:
        return steps_per_epoch(data)
    count = int(data.train.cardinality())
    return count if count > 0 else None


def train(build_model, data, *, epochs, learning_rate, steps=None, schedule="constant", warmup=None, options=None,
          **kwargs):
    """One phase with every weight trainable (training from scratch, or pretraining).

    `steps`: the budget in optimizer steps instead of `epochs`; `schedule`, `warmup`: the
    learning rate over the phase (see `Phase`).
    """
    def make_all_trainable(model):
        # Not `model.trainable = True`: Keras skips that when the flag is already True,
        # leaving layers frozen one by one still frozen; `unfreeze` sets every layer.
        unfreeze(model, batch_norm="train")

    phase = Phase("train", epochs, learning_rate, make_all_trainable, steps=steps, schedule=schedule, warmup=warmup)
    return run_phases(build_model, data, [phase], options, **kwargs)


def train_head_only(model):
    """Phase 1 of fine-tuning: the head trains, the backbone is frozen."""
    unfreeze(model.get_layer("head"), batch_norm="train")
    freeze(model.get_layer("backbone"))


def train_head_and_backbone(model, unfreeze_layers="all", batch_norm="frozen"):
    """Phase 2: the head and the unfrozen part of the backbone train (see `fine_tune`)."""
    unfreeze(model.get_layer("head"), batch_norm="train")
    backbone = model.get_layer("backbone")
    if unfreeze_layers == "all":
        unfreeze(backbone, batch_norm=batch_norm)
    elif isinstance(unfreeze_layers, int):
        unfreeze(backbone, top_layers=unfreeze_layers, batch_norm=batch_norm)
    else:
        unfreeze(backbone, from_layer=unfreeze_layers, batch_norm=batch_norm)


def fine_tune(build_model, data, *, learning_rate, finetune_learning_rate, head_epochs=0, finetune_epochs=0,
              unfreeze_layers="all", batch_norm="frozen", layer_decay=None, lr_groups=None,
              gradual_unfreeze=None, head_steps=None, finetune_steps=None, schedule="constant", warmup=None,
              lora=False, options=None, **kwargs):
    """Two phases: the head on a frozen backbone, then the unfrozen part of the backbone too.

    Args:
        build_model: zero-argument callable returning a model with `backbone` and `head`
            sub-models (built inside the distribution strategy's scope).
        data: a `headstart.recipes.data.DataSplits`.
        head_epochs: epochs of phase 1 (backbone frozen). Defaults to `0`.
        finetune_epochs: epochs of phase 2; 0 stops after phase 1. Defaults to `0`.
        learning_rate: phase 1 learning rate.
        finetune_learning_rate: phase 2 learning rate, usually 10x to 100x lower.
        unfreeze_layers: `"all"`, an int (that many top layers of the backbone), or a
            block or layer name (that layer and everything above it).
        batch_norm: `"frozen"` (batch norm stays in inference mode when unfrozen, the
            Keras guide's rule for small datasets) or `"train"`.
        layer_decay: phase 2: each backbone group below the head at this times the rate
            of the group above (timm's layer-wise decay). Defaults to `None`.
        lr_groups: phase 2: explicit rate multipliers by group, `{"stage3": 0.3}`.
            Defaults to `None`.
        gradual_unfreeze: phase 2: unfreeze the backbone's blocks from the top, one every
            this many epochs (an int), or at these epochs of the phase (a list); see
            `headstart.callbacks.GradualUnfreezing`. Defaults to `None` (all at once).
        head_steps, finetune_steps: a phase's budget in optimizer steps instead of epochs.
            Defaults to `None` (the epochs).
        schedule: each phase's learning rate over its steps: `"constant"`, `"cosine"`
            or `"onecycle"` (`headstart.models.schedules`). Defaults to `"constant"`.
        warmup: the fraction of each phase's steps that warms up. Defaults to `None`
            (the schedule's own default).
        lora: phase 2 is `lora` instead: the head and only the LoRA matrices of a backbone
            adapted with `headstart.models.lora.adapt` train (`unfreeze_layers` unused).
            Defaults to `False`.
        options: `TrainingOptions`.
    """
    def head_and_backbone(model):
        train_head_and_backbone(model, unfreeze_layers, batch_norm)

    # Gradual unfreezing works through the rate multipliers, so it needs them even without decay.
    rates = ({"decay": layer_decay, "groups": lr_groups}
             if layer_decay is not None or lr_groups or gradual_unfreeze else None)

    def unfreezing(first_epoch):
        if gradual_unfreeze is None:
            return []
        if isinstance(gradual_unfreeze, int):
            return [GradualUnfreezing(gradual_unfreeze, start_epoch=first_epoch)]
        return [GradualUnfreezing(schedule=list(gradual_unfreeze), start_epoch=first_epoch)]

    shape = dict(schedule=schedule, warmup=warmup)
    phases = [Phase("head", head_epochs, learning_rate, train_head_only, head_only=True, steps=head_steps, **shape),
              Phase("lora" if lora else "finetune", finetune_epochs, finetune_learning_rate,
                    lora_module.train_adapters if lora else head_and_backbone,
                    layer_rates=rates, callbacks=unfreezing, steps=finetune_steps, **shape)]
    return run_phases(build_model, data, phases, options, **kwargs)
