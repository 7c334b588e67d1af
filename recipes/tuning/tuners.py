"""keras-tuner's four tuners, made to resume after a kill and to log which process ran each trial.

Reloading a killed search runs into keras-tuner 1.4's own bugs, fixed here after every reload:

- GridSearch does not save its trial order (`_ordered_ids`) or its queue of trials to extend
  (`_populate_next`), so a resumed grid search stops early or dies with `KeyError` in
  `LinkedList.next` (keras-team/keras-tuner#1055). Both are rebuilt from the saved trials.
- `create_trial` writes the new trial's `trial.json` before `oracle.json`: a kill between
  the two leaves a RUNNING trial the oracle's state never heard of, which would never run
  and would count against `max_trials`. It is dropped (its id is reused).

The trial that was running at the kill is in `oracle.json`'s ongoing trials; keras-tuner's
reload puts it back in the retry queue, and it continues from the last epoch the engine
checkpointed in its folder (`resume/`, removed once the trial ends).
"""

import functools
import json
import os
import time

import keras_tuner
from keras_tuner.src.tuners.gridsearch import GridSearchOracle, LinkedList

from headstart.recipes.tuning.hypermodel import EPOCHS_METRIC, SECONDS_METRIC

TRIAL_STARTS = "trial_starts.jsonl"
CHECKPOINT_FOLDER = "resume"         # in a trial's folder while it runs: the engine's per-epoch state   # one JSON line per trial start: trial_id, tuner_id, pid, time


class ResumableSearch:
    """Mixed into each keras-tuner tuner class (see `make_tuner`)."""

    def reload(self):
        super().reload()
        if not self._is_worker():   # a worker's oracle is the chief's, behind gRPC
            repair_reloaded_oracle(self.oracle)

    def run_trial(self, trial, *args, **kwargs):
        # Passed on to `FineTuneHyperModel.fit`, which hands it to the engine's per-epoch checkpoint.
        kwargs["checkpoint_dir"] = os.path.join(self.get_trial_dir(trial.trial_id), CHECKPOINT_FOLDER)
        return super().run_trial(trial, *args, **kwargs)

    quiet = False   # --quiet: no line per trial (make_tuner sets it)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if not self.quiet:
            print(f"starting {trial_values_line(trial)}", flush=True)
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id, "pid": os.getpid(), "time": time.time()}
        # One write on an O_APPEND descriptor: lines from several workers do not interleave.
        descriptor = os.open(os.path.join(self.project_dir, TRIAL_STARTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, (json.dumps(record) + "\n").encode())
        finally:
            os.close(descriptor)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if not self.quiet:
            best = self.oracle.get_best_trials(1)
            so_far = (f"; best so far {best[0].score:.4f} (trial {best[0].trial_id})"
                      if best and best[0].score is not None else "")
            print(trial_line(self.oracle.get_trial(trial.trial_id), self.oracle.objective.name) + so_far, flush=True)


def trial_values_line(trial):
    """`trial 0003: lr 0.01, dropout 0.2 (epochs 3-7 of its budget)`: what a trial is about to train."""
    values = trial.hyperparameters.values
    rounds = ""
    if "tuner/epochs" in values:   # Hyperband: this round continues the trial from tuner/initial_epoch
        rounds = f" (epochs {values.get('tuner/initial_epoch', 0) + 1}-{values['tuner/epochs']} of its budget)"
    shown = ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                      for name, value in values.items() if not name.startswith("tuner/"))
    return f"trial {trial.trial_id}: {shown}{rounds}"


def trial_line(trial, objective):
    metrics = trial.metrics
    if trial.status == "COMPLETED":
        outcome = (f"{objective} {trial.score:.4f} ({metrics.get_last_value(EPOCHS_METRIC):.0f} epochs, "
                   f"{metrics.get_last_value(SECONDS_METRIC):.1f} s)")
    else:
        outcome = f"{trial.status.lower()}: {failure_reason(trial)}"
    values = ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                       for name, value in trial.hyperparameters.values.items() if not name.startswith("tuner/"))
    return f"trial {trial.trial_id}: {outcome} [{values}]"


def failure_reason(trial):
    """The last line of the traceback keras-tuner keeps as a failed trial's message."""
    lines = [line.strip() for line in (trial.message or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def repair_reloaded_oracle(oracle):
    """Fix the state keras-tuner reloads after a kill (see the module doc)."""
    started = set(oracle.start_order)
    for trial_id in [trial_id for trial_id in oracle.trials if trial_id not in started]:
        del oracle.trials[trial_id]
    if isinstance(oracle, GridSearchOracle):
        # The list is kept in ascending grid order (`_compare`); every trial ended so far may
        # still have an untried next combination (those already tried are skipped by the oracle).
        ordered = sorted(oracle.trials.values(), key=functools.cmp_to_key(
            lambda a, b: oracle._compare(a.hyperparameters.values, b.hyperparameters.values)))
        oracle._ordered_ids = LinkedList()
        for trial in ordered:
            oracle._ordered_ids.insert(trial.trial_id)
        oracle._populate_next = list(oracle.end_order)


TUNERS = {"hyperband": keras_tuner.Hyperband, "bayesian": keras_tuner.BayesianOptimization,
          "random": keras_tuner.RandomSearch, "grid": keras_tuner.GridSearch}


@functools.cache
def resumable(tuner_class):
    return type(tuner_class.__name__, (ResumableSearch, tuner_class), {})


def make_tuner(name, hypermodel, objective, *, directory, project_name, max_trials=None, max_epochs=None,
               hyperband_factor=3, seed=0, max_consecutive_failed_trials=3, strategy=None, quiet=False):
    """keras-tuner's tuner `name` on `hypermodel`, reloading the search in `directory/project_name` if any.

    `max_trials` also caps Hyperband (whose own schedule otherwise decides the count). Unless
    `quiet`, a line is printed when each trial starts and when it ends (its score, the best so far).
    """
    direction = "min" if objective.endswith("loss") else "max"
    # keras-tuner takes a seed of 0 for "no seed" (`seed or random.randint(...)`): --seed 0 would
    # draw other trials in every run. Its oracle gets seed + 1, so every --seed is reproducible.
    common = dict(objective=keras_tuner.Objective(objective, direction), seed=seed + 1, directory=str(directory),
                  project_name=project_name, overwrite=False, distribution_strategy=strategy,
                  max_consecutive_failed_trials=max_consecutive_failed_trials)
    if name == "hyperband":
        tuner = resumable(TUNERS[name])(hypermodel, max_epochs=max_epochs, factor=hyperband_factor, **common)
        tuner.oracle.max_trials = max_trials
    else:
        tuner = resumable(TUNERS[name])(hypermodel, max_trials=max_trials, **common)
    tuner.quiet = quiet
    return tuner
