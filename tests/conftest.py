import os

# Quiet TensorFlow's start-up banners so test failures stay readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CPU-only everywhere; keep thread pools small so the 2-core CI machine is not oversubscribed.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a clean Keras session with a fixed seed."""
    import keras

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield


# ## A finished fine-tuning run, for the tests that use one (evaluate, predict, export)

# As small as a run gets and still ends with everything a run leaves: digits 5-9 at 8 px,
# 5 labels per class, a few steps in each phase, a backbone with random weights (no
# pretraining), no baselines and no scratch comparison. Its accuracy is low (~0.4), which is
# what the tests want: the worst predictions, the confusion matrix and calibration all have
# something to show.
FINISHED_RUN_OPTIONS = dict(weights="none", image_size=8, steps=30, finetune_steps=10, baselines=False,
                            compare_scratch=False, name="tiny", quiet=True, seed=0)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The run folder (a Path) of a finished `headstart finetune` (FINISHED_RUN_OPTIONS); do not modify it:
    copy it (`shutil.copytree`) to change it."""
    import keras

    from headstart.recipes import cli, finetune

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    runs = tmp_path_factory.mktemp("finished_run")
    args = cli.options_for("finetune", runs_dir=str(runs), **FINISHED_RUN_OPTIONS)
    assert finetune.run(args) == 0
    return runs / "finetune" / "tiny"


# ## One tiny search for the tests that only read a finished one

# A random search of 6 trials on digits at 8 px, 1 + 1 epochs a trial, as `headstart tune`
# runs it. Each trial costs ~15 CPU seconds on the 2-core CI machine (building and tracing a
# model is most of it), so the tests that need a finished search share this one instead of
# running their own: tests/test_tune.py (the random tuner's results, and memory from trial
# to trial, which is why it has 6 trials and measures each one) and tests/test_from_tuning.py
# (retraining its best trial). Both files run on the same xdist worker (SHARED_WORKER below).
SHARED_SEARCH_TRIALS = 6
SHARED_SEARCH_OPTIONS = dict(tuner="random", max_trials=SHARED_SEARCH_TRIALS, weights="none", image_size=8, epochs=1,
                             finetune_epochs=1, name="s", seed=0)


@dataclasses.dataclass
class FinishedSearch:
    status: int            # what `tune.run` returned
    run_dir: object        # the RunDir `tune.search` returned
    tuner: object          # keras-tuner's tuner (its oracle holds the trials)
    rows: list             # trials.csv's rows, as `tune.search` returned them
    stdout: str            # what the search printed
    resident_mb: list      # resident memory after each trial's fit (and a garbage collection), MB
    runs_dir: Path


@pytest.fixture(scope="session")
def shared_random_search(tmp_path_factory):
    """The search above, run once through `tune.run` (see FinishedSearch)."""
    import keras
    import psutil

    from headstart.recipes import cli, tune
    from headstart.recipes.tuning import hypermodel

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    runs_dir = tmp_path_factory.mktemp("shared_search")
    resident, searched = [], []
    real_fit, real_search = hypermodel.FineTuneHyperModel.fit, tune.search

    def fit_and_measure(self, *args, **kwargs):
        result = real_fit(self, *args, **kwargs)
        gc.collect()
        resident.append(psutil.Process().memory_info().rss / 2**20)
        return result

    def search_and_keep(args):
        searched.append(real_search(args))
        return searched[-1]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(hypermodel.FineTuneHyperModel, "fit", fit_and_measure)
        patch.setattr(tune, "search", search_and_keep)
        status = tune.run(cli.options_for("tune", runs_dir=str(runs_dir), **SHARED_SEARCH_OPTIONS))
    [(run_dir, tuner, rows)] = searched
    return FinishedSearch(status, run_dir, tuner, rows, printed.getvalue(), resident, runs_dir)


# ## Scheduling on xdist's workers

# Files that share a session fixture run on one worker, so it is built once.
SHARED_WORKER = {"tests/test_from_tuning.py": "tests/test_tune.py",
                 # `finished_run`'s users: the tiny fine-tune is built once.
                 "tests/test_predict.py": "tests/test_evaluate.py", "tests/test_export.py": "tests/test_evaluate.py"}
# CPU seconds of each heavy file (or SHARED_WORKER group: test_tune.py's includes
# test_from_tuning.py), measured on the 2-core CI machine under two workers; a file not listed
# is taken to cost DEFAULT_COST. Only the order in which files are handed to the two workers
# depends on these: heaviest first, so that the last files to start are short ones and both
# workers finish at about the same time. (xdist's own order, most tests first, started the
# few-test heavy files last: a worker then ran them alone for minutes.) A wrong or missing
# number costs wall time, never a result.
COST = {
    "tests/test_tune.py": 290, "tests/test_evaluate.py": 280,   # with test_predict.py and test_export.py
    "tests/test_resume_cli.py": 275, "tests/test_tune_resume.py": 250,
    "tests/test_tune_distributed.py": 210, "tests/test_backbones.py": 185, "tests/test_readme.py": 140,
    "tests/test_finetune_cli.py": 120, "tests/test_training_tools.py": 120, "tests/test_bad_input.py": 105,
    "tests/test_studies_b.py": 80, "tests/test_studies_a.py": 70, "tests/test_multiworker.py": 70,
    "tests/test_progress.py": 65, "tests/test_engine.py": 65, "tests/test_models.py": 60,
    "tests/test_engine_resume.py": 40, "tests/test_gradient_logger.py": 40, "tests/test_early_stopping.py": 35,
    "tests/test_streaming_memory.py": 30, "tests/test_data.py": 25, "tests/test_packaging.py": 25,
    "tests/test_semisupervised.py": 25, "tests/test_freezing.py": 25, "tests/test_gradual_unfreezing.py": 20,
    "tests/test_layer_rates.py": 20, "tests/test_rank_backbones.py": 45, "tests/test_lr_find.py": 15,
    "tests/test_l2sp_transfer.py": 10,
}
DEFAULT_COST = 20


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the files of SHARED_WORKER on one worker, heaviest files first (COST)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class CostOrderedFileScheduling(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid):
            path = super()._split_scope(nodeid)
            return SHARED_WORKER.get(path, path)

        def _assign_work_unit(self, node):
            # The queue is complete when the first unit is handed out: order it then.
            if not self.ordered:
                self.ordered = True
                units = sorted(self.workqueue.items(), key=lambda unit: -COST.get(unit[0], DEFAULT_COST))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return CostOrderedFileScheduling(config, log)
