"""headstart tune --phases head,finetune: the head stage first, then fine-tuning trials from its best head."""

import csv
import json

import numpy as np
import pytest

from headstart.recipes import cli, tune
from headstart.recipes.errors import UsageError
from headstart.recipes.tuning import phases


def options(tmp_path, **overrides):
    settings = dict(weights="none", image_size=8, epochs=2, finetune_epochs=1, runs_dir=str(tmp_path), name="p",
                    seed=0, tuner="random", max_trials=2, head_trials=3, phases="head,finetune", augment="none",
                    quiet=True)
    return cli.options_for("tune", **{**settings, **overrides})


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_every_finetuning_trial_starts_from_the_saved_best_head(tmp_path, monkeypatch):
    import keras

    from headstart.recipes import engine

    real_fine_tune = engine.fine_tune
    starts = []

    def recording_fine_tune(build_model, data, **kwargs):
        model = build_model()
        starts.append((kwargs["head_epochs"], [weight.copy() for weight in model.get_layer("head").get_weights()]))
        return real_fine_tune(lambda: model, data, **kwargs)

    monkeypatch.setattr(engine, "fine_tune", recording_fine_tune)
    args = options(tmp_path)
    assert tune.run(args) == 0
    folder = tmp_path / "tune" / "p"
    head_rows, rows = read_csv(folder / "head_trials.csv"), read_csv(folder / "trials.csv")
    assert len(head_rows) == 3 and len(rows) == 2
    assert all(row["status"] == "COMPLETED" for row in head_rows + rows)
    # Stage 1 trained as a population (no engine.fine_tune call); stage 2's trials each called it once.
    assert len(starts) == 2 and all(head_epochs == 0 for head_epochs, _ in starts)
    saved = keras.models.clone_model(keras.saving.load_model(folder / "best.keras").get_layer("head"))
    saved.load_weights(folder / phases.BEST_HEAD)
    for _, weights in starts:
        for start, expected in zip(weights, saved.get_weights()):
            np.testing.assert_array_equal(start, expected)
    # The saved head is the best head trial's, and stage 2 kept its rate; --from-tuning retrains both phases.
    best_head = max(head_rows, key=lambda row: float(row["val_accuracy"]))
    assert all(row["lr"] == best_head["lr"] for row in rows)
    assert len({row["finetune_lr"] for row in rows}) == 2   # stage 2 searches the fine-tuning rate
    best = json.loads((folder / "best_hyperparameters.json").read_text())["finetune_options"]
    assert best["epochs"] == 2 and best["finetune_epochs"] == 1 and best["lr"] == pytest.approx(float(best_head["lr"]))
    ranked = [line for line in (folder / "head_summary.md").read_text().splitlines() if line[:3] in ("| 1", "| 2", "| 3")]
    assert len(ranked) == 3


@pytest.mark.parametrize("flags, words", [
    (dict(phases="finetune,head"), "out of order"),
    (dict(phases="head"), "give both phases"),
    (dict(phases="head,warmup"), "unknown phase 'warmup'"),
    (dict(phases=None, head_trials=5), "--head-trials"),
    (dict(head_trials=0), "--head-trials must be 1 or more"),
    (dict(finetune_epochs=0), "both stages"),
])
def test_misused_phase_options_are_refused(tmp_path, flags, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        tune.validate(options(tmp_path, **flags))


def test_mixup_is_searched_in_the_finetuning_stage_and_the_head_stage_still_runs_as_populations(tmp_path):
    args = options(tmp_path, mixup="0|0.2")
    tune.validate(args)
    assert args.population == 32   # stage 1 holds mixup at 0: its heads train together on cached features
    assert phases.head_stage(args).space["mixup"] == {"type": "fixed", "value": 0.0}
    assert phases.finetune_stage(args, {"lr": 0.01, "batch_size": 32, "head_units": "none"}).space["mixup"] == \
        {"type": "choice", "values": [0.0, 0.2]}
