import os

# Quiet TensorFlow's start-up banners so test failures stay readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CPU-only everywhere; keep thread pools small so the 2-core CI machine is not oversubscribed.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

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
