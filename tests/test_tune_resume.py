"""Kill a search with SIGKILL mid-trial and resume it: no completed trial runs again, it finishes.

Every tuner is tested: keras-tuner's reload has bugs of its own (GridSearch forgets its
order, keras-team/keras-tuner#1055), which `headstart.recipes.tuning.tuners` repairs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headstart.recipes import cli
from headstart.recipes.tuning import tuners

# 1 head + 3 fine-tuning epochs per trial at 8 px: long enough to be killed mid-trial,
# patience above the budget so every trial runs all its epochs.
COMMON = ["--weights", "none", "--image-size", "8", "--epochs", "1", "--finetune-epochs", "3", "--patience", "10",
          "--name", "k"]
SEARCHES = {
    # Hyperband's smallest schedule with every part of it: at max-epochs 2 (1 head + 1 fine-tuning
    # epoch) and factor 2, a bracket of two 1-epoch trials whose best is continued to epoch 2,
    # then a bracket of two 2-epoch trials: 5 trials (max-epochs 4 at factor 4 made 7, ~8 CPU
    # seconds each, for the same brackets and continued trial).
    "hyperband": ["--tuner", "hyperband", "--max-epochs", "2", "--hyperband-factor", "2"],
    "bayesian": ["--tuner", "bayesian", "--max-trials", "3"],
    "random": ["--tuner", "random", "--max-trials", "3"],
    "grid": ["--tuner", "grid", "--lr", "1e-2|3e-2|1e-1", "--dropout", "0.1", "--weight-decay", "1e-4",
             "--finetune-lr", "1e-3"],
}


def trials(project):
    return {path.parent.name.removeprefix("trial_"): json.loads(path.read_text())
            for path in project.glob("trial_*/trial.json") if path.read_text().strip()}


def starts(project):
    lines = (project / tuners.TRIAL_STARTS).read_text().splitlines() if (project / tuners.TRIAL_STARTS).exists() else []
    return [json.loads(line)["trial_id"] for line in lines]


def tune_command(runs_dir, tuner, *extra):
    return [sys.executable, "-m", "headstart", "tune", *COMMON, *SEARCHES[tuner], "--runs-dir", str(runs_dir), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("tuner", sorted(SEARCHES))
def test_a_search_killed_mid_trial_resumes_without_rerunning_completed_trials(tmp_path, capfd, tuner):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    project = tmp_path / "tune" / "k" / "search"
    process = subprocess.Popen(tune_command(tmp_path, tuner), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    killed_trial = None
    try:
        # Kill once a trial has completed and the next one has checkpointed an epoch (mid-trial).
        while process.poll() is None:
            states = trials(project)
            running = [trial_id for trial_id, state in states.items() if state["status"] == "RUNNING"
                       and (project / f"trial_{trial_id}" / tuners.CHECKPOINT_FOLDER).exists()]
            if any(state["status"] == "COMPLETED" for state in states.values()) and running:
                process.send_signal(signal.SIGKILL)
                killed_trial = running[0]
                break
            time.sleep(0.05)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert killed_trial is not None, f"the search ended before it could be killed: {process.stderr.read()[-2000:]}"
    completed_before = {trial_id for trial_id, state in trials(project).items() if state["status"] == "COMPLETED"}
    files_before = {trial_id: (project / f"trial_{trial_id}" / "trial.json").read_bytes()
                    for trial_id in completed_before}

    # The resumed search runs in this process: the kill is what needs a process of its own, and
    # a resume reads everything it continues from the run folder. A fresh process would cost
    # ~10 CPU seconds of importing TensorFlow more (the search has no --deterministic or other
    # process-wide setting).
    assert cli.main(tune_command(tmp_path, tuner, "--resume")[3:]) == 0, capfd.readouterr().err[-3000:]

    final = trials(project)
    assert all(state["status"] == "COMPLETED" for state in final.values()), \
        {trial_id: (state["status"], state.get("message")) for trial_id, state in final.items()}
    started = starts(project)
    for trial_id in completed_before:
        assert started.count(trial_id) == 1, f"trial {trial_id} ran again"
        assert (project / f"trial_{trial_id}" / "trial.json").read_bytes() == files_before[trial_id]
    assert started.count(killed_trial) == 2          # started, killed, continued once
    assert sorted(set(started)) == sorted(final)     # every trial the oracle knows ran, none else
    rows = (tmp_path / "tune" / "k" / "trials.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == len(final)
    # The interrupted trial ran its whole budget: it continued (or restarted) to the end.
    killed = final[killed_trial]
    budget = killed["hyperparameters"]["values"].get("tuner/epochs", 4) - \
        killed["hyperparameters"]["values"].get("tuner/initial_epoch", 0)
    assert killed["metrics"]["metrics"]["trial_epochs"]["observations"][0]["value"] == [budget]
    values = [json.dumps({name: value for name, value in state["hyperparameters"]["values"].items()
                          if not name.startswith("tuner/")}, sort_keys=True)
              for state in final.values() if "tuner/trial_id" not in state["hyperparameters"]["values"]]
    assert len(values) == len(set(values))           # no configuration searched twice
    if tuner == "grid":
        assert len(final) == 3                       # the whole grid, after the resume too
    assert Path(tmp_path / "tune" / "k" / "best_hyperparameters.json").exists()
