"""The fine-tuning HyperModel: each keras-tuner trial runs the project's two-phase fine-tune.

`build(hp)` builds `headstart finetune`'s classifier with the trial's dropout and head;
`fit(hp, model, ...)` trains it through `headstart.recipes.engine.fine_tune` (the head on the frozen
backbone, then the unfrozen part) with the trial's learning rates, weight decay and
unfreezing, and returns the best epoch's metrics.

Hyperband's epochs, on the trial's own timeline: a trial's full budget is the head phase
(`--epochs`, H) followed by the fine-tuning phase (`--finetune-epochs`, F), H + F epochs in
all (Hyperband's `max_epochs`). Hyperband asks for "train up to epoch E, starting at epoch
I" (`epochs`, `initial_epoch`; keras-tuner has loaded the weights the trial had at epoch I).
So epochs [I, E) run: those before H in the head phase, the rest in the fine-tuning phase
(`phase_epochs`). A trial continued from I >= H starts straight in the fine-tuning phase; one
continued from I < H still has the pretrained backbone (it was frozen), so its head phase
trains on the shared cached features too. Optimizer state is not carried over between rounds
(keras-tuner loads weights only), as with any keras-tuner Hyperband search.
"""

import copy
import math
import shutil
import time

import keras_tuner
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch  # not exported; the callback a trial's checkpoint comes from

from headstart.recipes import engine, finetune, options
from headstart.recipes.tuning import space as search_space

# Reported with each trial's metrics, so trials.csv has them in any process layout
# (a worker's metrics reach the chief's oracle with the trial).
EPOCHS_METRIC = "trial_epochs"
SECONDS_METRIC = "trial_seconds"


def phase_epochs(head_epochs, finetune_epochs, initial_epoch=0, epochs=None):
    """(head, fine-tune) epochs to run for Hyperband's `initial_epoch` and `epochs` (see the module doc)."""
    total = head_epochs + finetune_epochs
    end = total if epochs is None else min(epochs, total)
    head = max(0, min(end, head_epochs) - initial_epoch)
    tuned = max(0, end - max(initial_epoch, head_epochs))
    return head, tuned


class FineTuneHyperModel(keras_tuner.HyperModel):
    """`headstart finetune` as a keras-tuner HyperModel.

    Args:
        args: validated `headstart tune` options; their search-space attributes are
            replaced by each trial's values, everything else is the fixed recipe.
        space: the parsed space (`headstart.recipes.tuning.space.parse`).
        objective: the metric trials are scored on; early stopping watches it too, so the
            weights kept are the ones that scored.
        weights: the backbone weights to build from (the resolved file for `digits-source`).
        strategy: the `tf.distribute` strategy the trial trains in.
        head_weights: a head's saved weights (`head.save_weights`) every trial's classifier
            starts from (`--phases`' fine-tuning stage); None: the head as built.
    """

    def __init__(self, args, space, objective, weights, strategy=None, head_weights=None):
        super().__init__(name="finetune")
        self.args = args
        self.space = space
        self.objective = objective
        self.weights = weights
        self.strategy = strategy
        self.head_weights = head_weights
        self._splits = {}     # (batch size, mixup) -> the DataSplits every trial with those values trains on
        self._features = {}   # batch size -> the frozen backbone's cached features, shared by trials
        self.population_models = {}   # batch size -> the classifier a population of heads uses (vectorized.py)

    def trial_args(self, values):
        """The recipe's options with this trial's values, as `finetune.model_and_data` takes them."""
        trial = copy.copy(self.args)
        for name, value in values.items():
            setattr(trial, name, value)
        trial.head_units = search_space.head_units(trial.head_units)
        if str(trial.unfreeze).isdigit():
            trial.unfreeze = int(trial.unfreeze)
        trial.weights = self.weights
        return trial

    def build(self, hp):
        trial = self.trial_args(search_space.declare(hp, self.space))
        # finetune's own model: with --weight-decay-kind l2 it carries the trial's L2 on every kernel.
        model, splits, _ = finetune.model_and_data(trial, self.strategy)
        if self.head_weights is not None:
            # Before keras-tuner loads a checkpoint (Hyperband's next round, best models): those win.
            model.get_layer("head").load_weights(self.head_weights)
        # One data pipeline per batch size (and MixUp alpha) for the whole search: the cached
        # features are of its images.
        self._splits.setdefault(pipeline_key(trial), splits)
        return model

    def splits(self, trial):
        """The data trial (`trial_args`) trains on, after a trial with its batch size and mixup was built."""
        return self._splits[pipeline_key(trial)]

    def any_splits(self):
        """The data of some built trial (class names and validation images are the same for every
        batch size); `tuner.get_best_models` builds one, so after it there always is one."""
        return next(iter(self._splits.values()))

    def features(self, model, splits, batch_size):
        """The frozen backbone's features, computed on the first trial that needs them and kept."""
        if batch_size not in self._features:
            options.say(self.args, "computing the frozen backbone's features once, for every trial's head phase")
            self._features[batch_size] = engine.FeatureCache(model.get_layer("backbone"), splits,
                                                             self.args.cache_dir)
        return self._features[batch_size]

    def fit(self, hp, model, *args, **kwargs):
        trial = self.trial_args(search_space.declare(hp, self.space))
        splits = self._splits[pipeline_key(trial)]
        head, tuned = phase_epochs(self.args.epochs, self.args.finetune_epochs,
                                   kwargs.get("initial_epoch", 0), kwargs.get("epochs"))
        # keras-tuner's SaveBestEpoch would save whatever model `fit` is called on: in the
        # head phase that is the head alone (it trains on cached features). The trial's
        # checkpoint must be the whole classifier, so it is written here after training.
        callbacks = list(kwargs.get("callbacks", []))
        checkpoints = [callback for callback in callbacks if isinstance(callback, SaveBestEpoch)]
        passed = [callback for callback in callbacks if callback not in checkpoints]
        cached = (head > 0 and self.args.feature_cache and engine.feature_cache_refusal(splits) is None)
        training = engine.TrainingOptions(
            weight_decay=trial.weight_decay if self.args.weight_decay_kind == "decoupled" else 0.0,
            patience=self.args.patience, monitor=self.objective, verbose=int(self.args.verbose),
            progress=options.progress(self.args),
            feature_cache=self.args.feature_cache, cache_dir=self.args.cache_dir,
            **options.training_tools(trial, splits))
        # The engine saves the trial's state after every epoch there: a trial killed mid-way
        # (and retried by the resumed search) continues from its last epoch.
        resume_dir = kwargs.get("checkpoint_dir")
        started = time.perf_counter()
        try:
            result = engine.fine_tune(
                lambda: model, splits, head_epochs=head, finetune_epochs=tuned, learning_rate=trial.lr,
                finetune_learning_rate=trial.finetune_lr, unfreeze_layers=trial.unfreeze,
                batch_norm=self.args.batch_norm, layer_decay=self.args.layer_decay, lr_groups=self.args.lr_groups,
                gradual_unfreeze=self.args.gradual_unfreeze, options=training,
                schedule=self.args.schedule, warmup=self.args.warmup,
                strategy=self.strategy or "default", extra_callbacks=passed, checkpoint_dir=resume_dir,
                features=self.features(model, splits, trial.batch_size) if cached else None)
        except engine.TrainingDiverged as error:
            # Failed, not retried: the same values would diverge again.
            raise keras_tuner.errors.FailedTrialError(str(error)) from error
        finally:
            if resume_dir is not None:
                shutil.rmtree(resume_dir, ignore_errors=True)   # only an interrupted trial needs it
        seconds = time.perf_counter() - started
        for checkpoint in checkpoints:
            model.save_weights(checkpoint.filepath)
        return {**best_epoch(result.history, self.objective), EPOCHS_METRIC: len(result.history),
                SECONDS_METRIC: round(seconds, 3)}


def pipeline_key(trial):
    """What a trial's data pipeline depends on among the searched values."""
    return trial.batch_size, trial.mixup


def best_epoch(history, objective):
    """The metrics of the epoch with the best `objective` (losses lowest, others highest)."""
    sign = -1.0 if objective.endswith("loss") else 1.0
    scored = [row for row in history if math.isfinite(row.get(objective, math.nan))]
    if not scored:
        raise keras_tuner.errors.FailedTrialError(f"no epoch logged a finite {objective}")
    best = max(scored, key=lambda row: sign * row[objective])
    return {key: value for key, value in best.items() if key not in ("epoch", "phase")}
