"""`headstart finetune --from-tuning DIR` retrains a search's best trial; `--weight-decay-kind l2`."""

import json

import numpy as np
import pytest
import tensorflow as tf

import keras

from headstart.recipes import cli, finetune


@pytest.fixture(scope="module")
def search(shared_random_search):
    """A tiny random search on digits, as `headstart tune` leaves it: the session's shared one
    (tests/conftest.py), which tests/test_tune.py reads too."""
    return shared_random_search.run_dir.path, shared_random_search.runs_dir


def test_retrains_with_the_best_trials_values_and_options_set_by_hand_win(search, capsys):
    folder, runs = search
    best = json.loads((folder / "best_hyperparameters.json").read_text())["finetune_options"]
    args = cli.options_for("finetune", from_tuning=str(folder), runs_dir=str(runs), name="again",
                           finetune_epochs=2)   # set by hand: wins over the search's 1
    assert finetune.run(args) == 0
    config = json.loads((runs / "finetune" / "again" / "config.json").read_text())
    assert config["lr"] == pytest.approx(best["lr"]) and config["dropout"] == pytest.approx(best["dropout"])
    assert config["weight_decay"] == pytest.approx(best["weight_decay"])
    assert config["image_size"] == 8 and config["weights"] == "none" and config["epochs"] == 1
    assert config["finetune_epochs"] == 2
    assert f"from {folder}: " in capsys.readouterr().out
    metrics = json.loads((runs / "finetune" / "again" / "metrics.json").read_text())
    assert sum(phase["epochs"] for phase in metrics["phases"]) <= 3


@pytest.mark.parametrize("content, words", [
    (None, "no best_hyperparameters.json there"),
    ("{}", "is not a `headstart tune` result"),
    ('{"finetune_options": {"lr": 0.1, "warp_drive": 9}}', "finetune does not have (warp_drive)"),
])
def test_bad_tuning_folders_are_refused_in_one_line(tmp_path, capsys, content, words):
    folder = tmp_path / "search"
    folder.mkdir()
    if content is not None:
        (folder / "best_hyperparameters.json").write_text(content)
    code = cli.main(["finetune", "--from-tuning", str(folder), "--runs-dir", str(tmp_path / "runs")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and words in error and len(error.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_weight_decay_kind_l2_puts_an_l2_penalty_of_the_decay_on_every_kernel(tmp_path):
    args = cli.options_for("finetune", weights="none", image_size=8, weight_decay=3e-4, weight_decay_kind="l2",
                           runs_dir=str(tmp_path), compare_scratch=False)
    finetune.validate(args)
    model, _, _ = finetune.model_and_data(args)
    kernels = [layer.kernel for layer in _layers(model) if getattr(layer, "kernel", None) is not None]
    assert kernels and all(isinstance(kernel.regularizer, keras.regularizers.L2) for kernel in kernels)
    # (wd / 2) * ||w||^2 in Keras' convention (no 1/2 of its own): its gradient adds wd * w,
    # the coupled form of the step decoupled decay takes.
    assert all(kernel.regularizer.l2 == pytest.approx(1.5e-4) for kernel in kernels)
    weights = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    with tf.GradientTape() as tape:
        variable = tf.Variable(weights)
        penalty = kernels[0].regularizer(variable)
    np.testing.assert_allclose(tape.gradient(penalty, variable).numpy(), 3e-4 * weights, rtol=1e-5)


def _layers(layer):
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _layers(inner)


def test_a_budget_given_in_steps_wins_over_the_searchs_epochs(search):
    folder, runs = search
    args = cli.options_for("finetune", from_tuning=str(folder), runs_dir=str(runs), name="in-steps",
                           finetune_steps=3)
    finetune.validate(args)
    assert args.epochs == 1 and args.steps is None                  # the search's head budget, in epochs
    assert args.finetune_steps == 3 and args.finetune_epochs is None   # the user's, in steps
    assert "finetune_epochs" not in args.tuned
