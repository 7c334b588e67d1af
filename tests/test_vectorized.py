"""Vectorized head trials: a population of heads equals each head trained alone by Keras, and a
search that trains its trials as populations leaves what a one-at-a-time search leaves."""

import csv
import json

import numpy as np
import pytest

from headstart.recipes import cli, tune
from headstart.recipes.tuning import tuners, vectorized

# ## The population against Keras


def features_and_labels(count=20, shape=(2, 2, 4), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, *shape)).astype("float32"), rng.integers(0, classes, size=count)


def batches(features, labels, batch_size=8):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)   # a fixed order


def test_each_head_of_a_population_equals_the_same_head_trained_alone_by_keras():
    from headstart.models import schedules
    from headstart.models.heads import build_head
    from headstart.recipes import engine
    from headstart.recipes.tuning.population import HeadPopulation

    features, labels = features_and_labels()
    data = batches(features, labels)
    epochs, steps = 4, 4 * 3
    rates, decays, smoothing = [1e-2, 1e-1, 3e-3], [1e-2, 0.0, 1e-1], [0.0, 0.1, 0.2]
    population = HeadPopulation((2, 2, 4), 3, learning_rate=rates, weight_decay=decays, dropout=[0.0] * 3,
                                label_smoothing=smoothing, schedule="cosine", total_steps=steps, seed=5)
    start = population.kernel.numpy(), population.bias.numpy()
    logs = [population.train_epoch(data) for _ in range(epochs)]
    for index in range(3):
        # Keras alone: the engine's compile (AdamW, bias excluded from decay, smoothed loss) and fit.
        head = build_head((2, 2, 4), 3)
        head.set_weights([start[0][index], start[1][index]])
        engine.compile_model(head, learning_rate=schedules.make("cosine", rates[index], steps),
                             weight_decay=decays[index], num_classes=3, label_smoothing=smoothing[index])
        history = head.fit(data, epochs=epochs, verbose=0, shuffle=False).history
        kernel, bias = head.get_weights()
        # Tolerance 1e-6 (float32 rounding of a different summation order); measured: equal to the bit.
        np.testing.assert_allclose(population.kernel.numpy()[index], kernel, rtol=0, atol=1e-6)
        np.testing.assert_allclose(population.bias.numpy()[index], bias, rtol=0, atol=1e-6)
        assert np.abs(kernel - start[0][index]).max() > 1e-3   # it did train
        np.testing.assert_allclose([epoch["loss"][index] for epoch in logs], history["loss"], rtol=1e-5)
        np.testing.assert_allclose([epoch["accuracy"][index] for epoch in logs], history["accuracy"], atol=1e-6)
        evaluated = head.evaluate(data, verbose=0, return_dict=True)
        np.testing.assert_allclose(population.evaluate(data)["loss"][index], evaluated["loss"], rtol=1e-5)


def test_each_heads_own_hyperparameters_change_what_it_learns():
    from headstart.recipes.tuning.population import HeadPopulation

    features, labels = features_and_labels(count=32)
    data = batches(features, labels)
    # Heads 0-3 share their start; each differs from head 0 in one value.
    population = HeadPopulation((2, 2, 4), 3, learning_rate=[1e-3, 1e-1, 1e-3, 1e-3, 1e-3],
                                weight_decay=[0.0, 0.0, 0.0, 0.0, 1.0], dropout=[0.0, 0.0, 0.5, 0.0, 0.0],
                                label_smoothing=[0.0, 0.0, 0.0, 0.5, 0.0], seed=1)
    start = population.kernel.numpy()[0]
    population.set_weights(np.stack([start] * 5), np.zeros((5, 3), "float32"))
    for _ in range(3):
        population.train_epoch(data)
    kernel = population.kernel.numpy()
    moved = [np.linalg.norm(kernel[index] - start) for index in range(5)]
    assert moved[1] > 10 * moved[0]                          # a 100x learning rate moves much further
    assert not np.allclose(kernel[2], kernel[0], atol=1e-6)  # dropout changed its gradients
    assert not np.allclose(kernel[3], kernel[0], atol=1e-6)  # so did the smoothed targets
    assert np.linalg.norm(kernel[4]) < np.linalg.norm(kernel[0])   # decay shrank the kernel
    # Without dropout at evaluation: the loss of the smoothed head is its own smoothed loss.
    evaluated = population.evaluate(data)["loss"]
    assert evaluated[3] > evaluated[0]


def test_a_stopped_head_no_longer_moves_and_ends_with_its_best_epoch():
    from headstart.recipes.tuning.population import HeadPopulation, PerHeadStopping

    features, labels = features_and_labels(count=16)
    data = batches(features, labels)
    population = HeadPopulation((2, 2, 4), 3, learning_rate=[1e-2, 1e-2], weight_decay=[0.0, 0.0],
                                dropout=[0.0, 0.0], label_smoothing=[0.0, 0.0], seed=2)
    stopping = PerHeadStopping(population, "val_loss", patience=1)
    # Head 1's validation loss is made to get worse after the first epoch; head 0's improves.
    for epoch, head_one_loss in enumerate([1.0, 2.0, 3.0]):
        before = population.kernel.numpy()
        trained = population.train_epoch(data)
        logs = {"loss": trained["loss"], "accuracy": trained["accuracy"], "val_accuracy": np.zeros(2),
                "val_loss": np.array([1.0 - epoch * 0.1, head_one_loss])}
        if epoch == 0:
            best_of_head_one = population.kernel.numpy()[1]
        stopping.end_epoch(epoch, logs)
        if epoch == 2:
            np.testing.assert_array_equal(population.kernel.numpy()[1], before[1])   # masked out
    assert list(population.active.numpy()) == [True, False]
    assert stopping.best_epoch.tolist() == [2, 0] and len(stopping.history[1]) == 2
    np.testing.assert_array_equal(stopping.best_kernel[1], best_of_head_one)


# ## Searches

def tiny(tmp_path, name, **overrides):
    settings = dict(weights="none", image_size=8, epochs=2, finetune_epochs=0, runs_dir=str(tmp_path), name=name,
                    seed=0, tuner="random", max_trials=4, augment="none", quiet=True)
    return cli.options_for("tune", **{**settings, **overrides})


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_vectorized_search_leaves_the_files_a_one_at_a_time_search_leaves(tmp_path):
    import keras

    assert tune.run(tiny(tmp_path, "one", population=1)) == 0
    keras.backend.clear_session(free_memory=False)
    args = tiny(tmp_path, "many", population=3)   # a population of 3, then one of 1
    tune.validate(args)
    _, tuner, _ = tune.search(args)
    one, many = tmp_path / "tune" / "one", tmp_path / "tune" / "many"
    assert sorted(path.name for path in one.iterdir()) == sorted(path.name for path in many.iterdir())
    rows_one, rows_many = read_csv(one / "trials.csv"), read_csv(many / "trials.csv")
    assert list(rows_one[0]) == list(rows_many[0]) and len(rows_many) == 4
    assert all(row["status"] == "COMPLETED" and 1 <= int(row["epochs"]) <= 2 for row in rows_many)
    # The oracle drew the same values in both (same seed): only the training differs.
    assert [row["lr"] for row in rows_one] == [row["lr"] for row in rows_many]
    summary_one, summary_many = ((folder / "summary.md").read_text().splitlines() for folder in (one, many))
    assert summary_one[2] == summary_many[2] and len(summary_one) == len(summary_many)
    best_one, best_many = (json.loads((folder / "best_hyperparameters.json").read_text()) for folder in (one, many))
    assert set(best_one) == set(best_many) and set(best_one["finetune_options"]) == set(best_many["finetune_options"])
    # best.keras is the best trial's classifier at its best epoch: it scores what the trial scored.
    best_row = max(rows_many, key=lambda row: float(row["val_accuracy"]))
    model = keras.saving.load_model(many / "best.keras")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accuracy = model.evaluate(tuner.hypermodel.any_splits().val, verbose=0, return_dict=True)
    assert accuracy[[key for key in accuracy if key.endswith("accuracy")][0]] == pytest.approx(
        float(best_row["val_accuracy"]), abs=1e-6)


def test_a_vectorized_search_interrupted_mid_population_resumes_without_losing_a_finished_trial(tmp_path,
                                                                                               monkeypatch):
    import keras

    real = vectorized.train_population
    calls = []

    def interrupted_second_population(tuner, hypermodel, args, trials):
        calls.append([trial.trial_id for trial in trials])
        if len(calls) == 2:
            for trial in trials:   # started, as a killed process leaves them: RUNNING in the oracle's state
                tuner.on_trial_begin(trial)
            raise KeyboardInterrupt
        return real(tuner, hypermodel, args, trials)

    monkeypatch.setattr(vectorized, "train_population", interrupted_second_population)
    with pytest.raises(KeyboardInterrupt):
        tune.run(tiny(tmp_path, "k", population=2, max_trials=5))
    project = tmp_path / "tune" / "k" / tune.PROJECT
    states = {path.parent.name: json.loads(path.read_text()) for path in project.glob("trial_*/trial.json")}
    finished = {name: (project / name / "trial.json").read_bytes() for name, state in states.items()
                if state["status"] == "COMPLETED"}
    assert sorted(finished) == ["trial_0", "trial_1"]
    assert sorted(name for name, state in states.items() if state["status"] == "RUNNING") == ["trial_2", "trial_3"]

    monkeypatch.setattr(vectorized, "train_population", real)
    keras.backend.clear_session(free_memory=False)
    assert tune.run(tiny(tmp_path, "k", population=2, max_trials=5, resume=True)) == 0
    rows = read_csv(tmp_path / "tune" / "k" / "trials.csv")
    assert [row["status"] for row in rows] == ["COMPLETED"] * 5
    for name, content in finished.items():
        assert (project / name / "trial.json").read_bytes() == content   # not rerun
    started = [json.loads(line)["trial_id"] for line in (project / tuners.TRIAL_STARTS).read_text().splitlines()]
    assert sorted(started) == ["0", "1", "2", "2", "3", "3", "4"]   # the interrupted two ran again, once


def test_a_grid_search_fills_its_populations_and_tries_every_point_once(tmp_path, capsys):
    args = tiny(tmp_path, "g", tuner="grid", population=4, max_trials=None, lr="1e-2|3e-2|1e-1", dropout="0|0.3",
                finetune_lr="1e-3",
                weight_decay="1e-4", quiet=False)
    assert tune.run(args) == 0
    rows = read_csv(tmp_path / "tune" / "g" / "trials.csv")
    points = sorted((float(row["lr"]), float(row["dropout"])) for row in rows)
    assert points == sorted((lr, dropout) for lr in (1e-2, 3e-2, 1e-1) for dropout in (0.0, 0.3))
    populations = [line for line in capsys.readouterr().out.splitlines() if line.startswith("population of")]
    assert [line.split()[2] for line in populations] == ["4", "2"]
