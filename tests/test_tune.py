"""headstart tune: the search space, Hyperband's epochs, each tuner's results, failed trials, memory."""

import csv
import json
import math

import numpy as np
import pytest

from conftest import SHARED_SEARCH_OPTIONS, SHARED_SEARCH_TRIALS
from headstart.recipes import cli, tune
from headstart.recipes.errors import UsageError
from headstart.recipes.tuning import distributed, hypermodel
from headstart.recipes.tuning import space as search_space

# ## The search space and the budget (no TensorFlow)


def parse(flag_values):
    args = cli.options_for("tune", **flag_values)
    return search_space.parse(args)


def test_space_parses_ranges_choices_and_fixed_values_with_their_defaults():
    space = parse({"lr": "1e-5:1e-2", "dropout": "0.3", "unfreeze": "all|stage3", "batch_size": "16|32"})
    assert space["lr"] == {"type": "range", "low": 1e-5, "high": 1e-2, "sampling": "log"}
    assert space["dropout"] == {"type": "fixed", "value": 0.3}
    assert space["unfreeze"] == {"type": "choice", "values": ["all", "stage3"]}
    assert space["batch_size"] == {"type": "choice", "values": [16, 32]}
    # Defaults: dropout linear 0:0.6, weight decay log 1e-6:1e-2, each declared once.
    assert space["weight_decay"] == {"type": "range", "low": 1e-6, "high": 1e-2, "sampling": "log"}
    assert space["finetune_lr"]["sampling"] == "log" and space["dropout"] != parse({})["dropout"]
    assert parse({})["dropout"] == {"type": "range", "low": 0.0, "high": 0.6, "sampling": "linear"}
    assert set(space) == {dimension.name for dimension in search_space.DIMENSIONS}


def test_trial_values_declared_on_keras_tuner_and_converted_back_for_finetune():
    import keras_tuner

    space = parse({"lr": "1e-3:1e-1", "head_units": "none|128,64", "dropout": "0.25"})
    hp = keras_tuner.HyperParameters()
    values = search_space.declare(hp, space)
    assert 1e-3 <= values["lr"] <= 1e-1 and values["dropout"] == 0.25 and values["head_units"] == "none"
    hp.values["head_units"] = "128,64"
    assert search_space.finetune_values(dict(hp.values))["head_units"] == "128,64"
    assert search_space.finetune_values({"head_units": "none"})["head_units"] == ""


@pytest.mark.parametrize("head, tuned, initial, epochs, expected", [
    (3, 4, 0, None, (3, 4)),     # not Hyperband: the whole budget
    (3, 4, 0, 2, (2, 0)),        # a first Hyperband round that ends inside the head phase
    (3, 4, 2, 5, (1, 2)),        # continued from epoch 2: one more head epoch, then two fine-tuning
    (3, 4, 3, 7, (0, 4)),        # continued at the phase boundary: fine-tuning only
    (3, 4, 5, 7, (0, 2)),
    (0, 4, 0, 2, (0, 2)),        # no head phase
])
def test_hyperband_epochs_map_onto_the_two_phases(head, tuned, initial, epochs, expected):
    assert hypermodel.phase_epochs(head, tuned, initial, epochs) == expected
    assert sum(expected) == (epochs or head + tuned) - initial


def test_role_follows_keras_tuners_environment_variables():
    assert distributed.role({}) == "standalone"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distributed.role({**env, "KERASTUNER_TUNER_ID": "chief"}) == "chief"
    assert distributed.role({**env, "KERASTUNER_TUNER_ID": "tuner1"}) == "worker"
    with pytest.raises(UsageError, match="KERASTUNER_TUNER_ID"):
        distributed.role(env)


# ## Bad input: one line, exit 2, nothing written

BAD_INPUT = [
    (["--lr", "1e-2:1e-4"], "inverted"),
    (["--dropout", "0.3:0.3"], "empty"),
    (["--weight-decay", "0:1e-2"], "log-scale range must be above 0"),
    (["--lr=-1e-3:1e-2"], "above 0"),
    (["--dropout", "0:1.5"], "--dropout"),
    (["--batch-size", "8:64"], "choices"),
    (["--head-units", "64|x"], "--head-units"),
    (["--unfreeze", "all|nosuchblock"], "--unfreeze nosuchblock"),
    (["--tuner", "annealing"], "hyperband, bayesian, random, grid"),
    (["--objective", "val_f1"], "loss, accuracy, val_loss, val_accuracy"),
    (["--resume", "--name", "never-ran"], "no run"),
    (["--hyperband-factor", "1"], "--hyperband-factor"),
    (["--max-epochs", "0"], "--max-epochs"),
    (["--mixup=0|-0.2"], "--mixup"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=[" ".join(argv) for argv, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    status = cli.main(["tune", "--weights", "none", "--runs-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("headstart: error:") and message in err
    assert not (tmp_path / "tune").exists()


def test_resume_refuses_a_different_search_space(tmp_path, capsys):
    started = cli.options_for("tune", weights="none", runs_dir=str(tmp_path), name="s", lr="1e-3:1e-1")
    tune.validate(started)
    folder = tmp_path / "tune" / "s"
    folder.mkdir(parents=True)
    (folder / tune.SEARCH_FILE).write_text(json.dumps(tune.saved_search(started)))

    status = cli.main(["tune", "--weights", "none", "--runs-dir", str(tmp_path), "--name", "s", "--resume",
                       "--lr", "1e-4:1e-1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "--lr 0.001:0.1, not 0.0001:0.1" in err
    # The same options (and a changed --max-trials) are accepted.
    same = cli.options_for("tune", weights="none", runs_dir=str(tmp_path), name="s", lr="1e-3:1e-1",
                           resume=True, max_trials=7)
    tune.validate(same)
    assert sorted(path.name for path in folder.iterdir()) == [tune.SEARCH_FILE]


# ## Tiny searches

def tiny(tmp_path, **overrides):
    settings = dict(weights="none", image_size=8, epochs=1, finetune_epochs=1, runs_dir=str(tmp_path), name="s",
                    seed=0)
    return cli.options_for("tune", **{**settings, **overrides})


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


TUNER_SETTINGS = {
    # 1 + 1 epochs per trial at factor 2: a bracket of two 1-epoch trials whose best is
    # continued to epoch 2, then a bracket of two 2-epoch trials (Hyperband's smallest schedule
    # with a continued trial; tests/test_tune_distributed.py runs the default factor, 3).
    "hyperband": dict(epochs=1, finetune_epochs=1, hyperband_factor=2, patience=10),
    # Its first max(3 x dimensions, 3) trials are random points (keras-tuner's
    # num_initial_points): 2 trials run the code 3 did.
    "bayesian": dict(max_trials=2),
    # The random tuner's is the session's shared search (tests/conftest.py, 6 trials), which
    # test_memory_does_not_grow_from_trial_to_trial and tests/test_from_tuning.py read too.
    "random": SHARED_SEARCH_OPTIONS,
    "grid": dict(lr="1e-2|1e-1", dropout="0.1", weight_decay="1e-4", finetune_lr="1e-3", max_trials=5),
}


@pytest.mark.parametrize("tuner", sorted(TUNER_SETTINGS))
def test_tiny_search_writes_consistent_results(tmp_path, capsys, request, tuner):
    if tuner == "random":
        shared = request.getfixturevalue("shared_random_search")
        run_dir, keras_tuner_search, rows, printed = shared.run_dir, shared.tuner, shared.rows, shared.stdout
    else:
        args = tiny(tmp_path, tuner=tuner, **TUNER_SETTINGS[tuner])
        tune.validate(args)
        run_dir, keras_tuner_search, rows = tune.search(args)
        printed = capsys.readouterr().out
    oracle = keras_tuner_search.oracle

    csv_rows = read_csv(run_dir.file("trials.csv"))
    assert len(csv_rows) == len(oracle.trials) == len(rows) > 0
    assert all(row["status"] == "COMPLETED" and row["reason"] == "" for row in csv_rows)
    scores = [float(row["val_accuracy"]) for row in csv_rows]
    best = json.loads(run_dir.file("best_hyperparameters.json").read_text())
    assert best["objective"] == {"name": "val_accuracy", "value": pytest.approx(max(scores))}
    best_row = next(row for row in csv_rows if row["trial_id"] == best["trial_id"])
    assert float(best_row["val_accuracy"]) == pytest.approx(max(scores))
    assert best["hyperparameters"]["lr"] == pytest.approx(float(best_row["lr"]))
    # What the lead's `finetune --from-tuning` reads: finetune's own options, accepted as they are.
    options = best["finetune_options"]
    assert options["lr"] == pytest.approx(float(best_row["lr"])) and options["head_units"] == ""
    assert options["backbone"] == "resnet8" and options["image_size"] == 8 and options["weights"] == "none"
    cli.options_for("finetune", **options)
    # Every trial logged exactly the metrics `--objective` is checked against, before any trial.
    logged = set(oracle.trials[best["trial_id"]].metrics.metrics)
    assert logged - {hypermodel.EPOCHS_METRIC, hypermodel.SECONDS_METRIC} == set(tune.LOGGED_METRICS)

    assert run_dir.file("search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = run_dir.file("summary.md").read_text()
    assert f"| 1 | {best['trial_id']} | {max(scores):.4f} |" in summary
    import keras

    model = keras.saving.load_model(run_dir.file("best.keras"))
    assert model.output_shape[-1] == 5
    # The best trial is the search's complete model too: raw images in, the five digits' logits out.
    info = json.loads(run_dir.file("model.json").read_text())
    assert info["recipe"] == "tune" and info["class_names"] == ["5", "6", "7", "8", "9"] and info["temperature"] > 0
    raw = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(run_dir.file("model.keras"))(raw)),
                               np.asarray(model(raw / 255.0)), atol=1e-5)
    assert json.loads(run_dir.file("config.json").read_text())["recipe"] == "tune"
    lines = [line for line in printed.splitlines() if line.startswith("trial ")]
    assert len(lines) == len(csv_rows)

    if tuner == "hyperband":
        # Hyperband's epochs: each trial ran exactly from tuner/initial_epoch to tuner/epochs.
        assert len(csv_rows) == 5
        for row in csv_rows:
            assert int(row["epochs"]) == int(row["tuner/epochs"]) - int(row["tuner/initial_epoch"])
        continued = [row for row in csv_rows if row["tuner/trial_id"]]
        assert len(continued) == 1 and continued[0]["tuner/initial_epoch"] == "1"
    if tuner == "grid":
        assert sorted(float(row["lr"]) for row in csv_rows) == [1e-2, 1e-1]   # the grid, each point once


def test_mixup_is_a_search_dimension_with_its_own_pipeline(tmp_path):
    args = tiny(tmp_path, tuner="grid", lr="1e-2", dropout="0.1", weight_decay="1e-4", finetune_lr="1e-3",
                mixup="0|0.4", finetune_epochs=0, max_trials=3)
    tune.validate(args)
    run_dir, keras_tuner_search, _ = tune.search(args)
    rows = read_csv(run_dir.file("trials.csv"))
    assert sorted(float(row["mixup"]) for row in rows) == [0.0, 0.4]
    # Each alpha trained on its own pipeline: the MixUp trial's training labels are mixed
    # (soft distributions), the other's class indices; validation labels are never mixed.
    pipelines = keras_tuner_search.hypermodel._splits
    assert sorted(pipelines) == [(32, 0.0), (32, 0.4)]
    def labels(dataset):
        return np.concatenate([np.asarray(batch_labels) for _, batch_labels in dataset])
    mixed, plain = labels(pipelines[(32, 0.4)].train), labels(pipelines[(32, 0.0)].train)
    assert plain.ndim == 1 and mixed.ndim == 2 and not np.isin(mixed, (0.0, 1.0)).all()
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-6)
    assert labels(pipelines[(32, 0.4)].val).ndim == 1
    best = json.loads(run_dir.file("best_hyperparameters.json").read_text())
    assert best["finetune_options"]["mixup"] in (0.0, 0.4)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path, monkeypatch):
    from headstart.recipes import engine

    real_fine_tune = engine.fine_tune
    calls = []

    def fine_tune_out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory building the second trial")
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(engine, "fine_tune", fine_tune_out_of_memory_once)
    args = tiny(tmp_path, tuner="random", max_trials=3)
    assert tune.run(args) == 0
    rows = read_csv(tmp_path / "tune" / "s" / "trials.csv")
    assert [row["status"] for row in rows] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert rows[1]["reason"] == "MemoryError: out of memory building the second trial"
    assert rows[1]["val_accuracy"] == ""
    best = json.loads((tmp_path / "tune" / "s" / "best_hyperparameters.json").read_text())
    assert best["trial_id"] in ("0", "2")


def test_a_diverging_trial_fails_with_the_engines_reason(tmp_path):
    # Adam's steps are about the rate whatever the gradient: at 1e38 the weights overflow float32.
    args = tiny(tmp_path, tuner="random", max_trials=2, lr="1e38", finetune_lr="1e38", weight_decay="0",
                epochs=3, finetune_epochs=0)
    assert tune.run(args) == 1   # no trial completed
    rows = read_csv(tmp_path / "tune" / "s" / "trials.csv")
    assert [row["status"] for row in rows] == ["FAILED", "FAILED"]
    assert all("training diverged in phase head" in row["reason"] for row in rows)
    assert not (tmp_path / "tune" / "s" / "best_hyperparameters.json").exists()


def test_memory_does_not_grow_from_trial_to_trial(shared_random_search):
    # The shared search (tests/conftest.py) measured the resident memory after each trial's
    # fit and a garbage collection. What grows per trial is models and graphs built, not
    # epochs: one epoch per phase will do.
    trials = SHARED_SEARCH_TRIALS
    resident = shared_random_search.resident_mb
    assert shared_random_search.status == 0   # what `tune.run` returned
    assert len(resident) == trials
    per_trial = (resident[-1] - resident[0]) / (trials - 1)
    assert per_trial < MEMORY_GROWTH_PER_TRIAL_MB, f"resident memory after each trial (MB): {resident}"


# The bound is TensorFlow's own leak, not zero. Measured (TF 2.21, Keras 3.15, this test's
# resnet8 at 8 px): the search grew 17 MB per trial, with or without clear_session, the
# per-epoch checkpoints or the feature cache, and malloc_trim gives none of it back; a plain
# Keras loop over the same model (build, compile, fit, recompile, fit, evaluate,
# clear_session) grew 57 MB per iteration. A search that kept anything of its own per
# trial on top of what Keras keeps would pass this bound.
MEMORY_GROWTH_PER_TRIAL_MB = 25
