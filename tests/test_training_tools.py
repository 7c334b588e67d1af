"""Budgets in steps, learning-rate schedules, label smoothing, class weights, EMA and gradient
accumulation: each checked against an independent computation (a closed form, NumPy, or the
same training done another way)."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras

from headstart.models import schedules
from headstart.recipes import cli, engine
from test_engine import NUM_CLASSES, _model, _splits   # tiny learnable images, a tiny ResNet
from test_engine_resume import Interrupted, InterruptAt

# ## Schedules against their closed forms


def _values(schedule, steps):
    return np.array([float(schedule(step)) for step in range(steps)])


@pytest.mark.parametrize("warmup", [None, 0.2])
def test_cosine_schedule_warms_up_linearly_then_decays_as_the_closed_form(warmup):
    rate, total = 0.1, 50
    values = _values(schedules.make("cosine", rate, total, warmup), total + 1)
    warm = int(round((warmup or 0) * total))
    steps = np.arange(total + 1)
    decay = 0.5 * rate * (1 + np.cos(np.pi * np.clip(steps - warm, 0, None) / (total - warm)))
    expected = np.where(steps < warm, rate * steps / max(warm, 1), decay)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
    assert values.max() == pytest.approx(rate) and values[-1] == pytest.approx(0.0, abs=1e-7)


def test_onecycle_follows_fastais_combined_cosine():
    rate, total = 0.01, 40
    values = _values(schedules.make("onecycle", rate, total), total + 1)
    warm = 10                          # fastai's pct_start 0.25

    def cos_anneal(start, end, fraction):   # fastai's SchedCos
        return start + (1 + math.cos(math.pi * (1 - fraction))) * (end - start) / 2

    expected = [cos_anneal(rate / 25, rate, step / warm) if step < warm else
                cos_anneal(rate, rate / 25 / 1e5, (step - warm) / (total - warm)) for step in range(total + 1)]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_constant_is_the_plain_rate_and_bad_schedules_are_refused():
    assert schedules.make("constant", 0.1, 100) == 0.1
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.make("linear", 0.1, 100)
    with pytest.raises(ValueError, match="as long as the phase"):
        schedules.make("cosine", 0.1, 100, warmup=1.0)


class RecordRates(keras.callbacks.Callback):
    """The learning rate each optimizer step used, read before the step."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_a_phase_runs_its_schedule_and_a_resumed_phase_goes_on_where_it_was(tmp_path):
    def run(checkpoint_dir, **extra):
        keras.utils.set_random_seed(1)
        recorder = RecordRates()
        result = engine.train(_model, _splits(), epochs=0, steps=12, learning_rate=0.05, schedule="cosine", warmup=0.25,
                              options=engine.TrainingOptions(patience=50, progress="quiet"),
                              checkpoint_dir=checkpoint_dir, extra_callbacks=[recorder, *extra.get("callbacks", ())])
        return result, recorder.rates

    expected = _values(schedules.make("cosine", 0.05, 12, 0.25), 12)
    result, rates = run(tmp_path / "whole")
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-8)
    assert result.phases[0]["steps"] == 12 and result.phases[0]["warmup_steps"] == 3

    with pytest.raises(Interrupted):     # 4 batches per pass: killed as the third epoch begins
        run(tmp_path / "resumed", callbacks=[InterruptAt(2)])
    _, resumed_rates = run(tmp_path / "resumed")
    np.testing.assert_allclose(resumed_rates, expected[8:], rtol=1e-5, atol=1e-8)


# ## Budgets in steps


@pytest.mark.parametrize("steps, batches, expected", [
    (12, 4, (3, 1, 4)),       # whole passes
    (10, 4, (3, 1, 4)),       # the last epoch ends after 2 of its 4 batches
    (500, 1, (25, 20, 20)),   # few labels: one epoch repeats the data 20 times
    (0, 4, (0, 1, 4)),
])
def test_a_step_budget_is_epochs_of_whole_passes_with_at_most_25_checks(steps, batches, expected):
    budget = engine.phase_budget(engine.Phase("p", 0, 0.1, None, steps=steps), batches)
    assert (budget.epochs, budget.passes, budget.epoch_steps) == expected
    assert budget.steps == steps and budget.epochs <= engine.MAX_EPOCHS_PER_STEP_BUDGET


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.mark.parametrize("steps", [10, 9])
def test_a_step_budget_runs_exactly_that_many_optimizer_steps(steps):
    counter = CountBatches()
    result = engine.fine_tune(_model, _splits(), head_epochs=0, finetune_epochs=0, finetune_steps=steps,
                              learning_rate=1e-2, finetune_learning_rate=1e-2,
                              options=engine.TrainingOptions(patience=50, progress="quiet"), extra_callbacks=[counter])
    assert counter.batches == steps
    assert int(result.model.optimizer.iterations) == steps
    assert result.phases[0]["steps"] == steps and result.phases[0]["epochs"] == math.ceil(steps / 4)
    assert result.phases[0]["budget"] == {"steps": steps}


def test_a_head_budget_in_steps_on_cached_features_repeats_the_few_images():
    # 32 images, batch 8: 4 batches a pass; 200 steps are 25 epochs of 2 passes.
    result = engine.fine_tune(_model, _splits(), head_epochs=0, finetune_epochs=0, head_steps=200,
                              learning_rate=1e-2, finetune_learning_rate=1e-3,
                              options=engine.TrainingOptions(patience=100, progress="quiet"))
    head = result.phases[0]
    assert head["feature_cache"] and head["steps"] == 200 and head["epochs"] == 25 and head["batches_per_epoch"] == 8
    assert len(result.history) == 25


# ## Label smoothing, class weights


def _logits_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES)])


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_label_smoothed_loss_is_the_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, NUM_CLASSES, 16).astype("int32")
    model = _logits_model()
    engine.compile_model(model, learning_rate=1e-3, label_smoothing=0.2)
    loss = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)["loss"]
    targets = np.eye(NUM_CLASSES)[y] * 0.8 + 0.2 / NUM_CLASSES
    expected = -(targets * _log_softmax(model.predict(x, verbose=0))).sum(axis=1).mean()
    assert loss == pytest.approx(expected, rel=1e-5)
    # Soft labels (MixUp's) go through unchanged, smoothed the same way.
    soft = keras.ops.convert_to_numpy(model.loss(np.eye(NUM_CLASSES)[y].astype("float32"), model.predict(x, verbose=0)))
    assert float(soft) == pytest.approx(expected, rel=1e-5)


def test_class_weighted_loss_is_numpys_weighted_mean():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)).astype("float32"), np.array([0] * 8 + [1] * 3 + [2], dtype="int32")
    weights = {0: 0.5, 1: 1.3333, 2: 4.0}
    model = _logits_model()
    engine.compile_model(model, learning_rate=1e-3)
    logits = model.predict(x, verbose=0)   # before the step: fit logs the loss of the weights it started from
    history = model.fit(x, y, batch_size=12, epochs=1, class_weight=weights, verbose=0, shuffle=False)
    per_example = -_log_softmax(logits)[np.arange(12), y]
    sample_weights = np.array([weights[label] for label in y])
    assert history.history["loss"][0] == pytest.approx((sample_weights * per_example).mean(), rel=1e-5)


def test_balanced_class_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    from headstart.recipes import data, options

    splits = data.load("digits", image_size=8, classes="0,1,2", seed=0)
    labels = np.concatenate([y for _, y in splits.train_epochs(0, 1).as_numpy_iterator()])
    args = cli.options_for("finetune", class_weight="balanced")
    tools = options.training_tools(args, splits)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert [tools["class_weight"][label] for label in range(3)] == pytest.approx(expected.tolist())


# ## EMA and gradient accumulation


class RecordWeights(keras.callbacks.Callback):
    """The trained weights after every step (EMA swaps the average in only at epoch ends)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([variable.numpy().copy() for variable in self.model.trainable_variables])


def test_ema_weights_are_numpys_moving_average_and_are_what_is_kept():
    decay, recorder = 0.8, RecordWeights()
    result = engine.train(_model, _splits(), epochs=2, learning_rate=1e-2,
                          options=engine.TrainingOptions(patience=50, progress="quiet", ema=decay),
                          extra_callbacks=[recorder])
    average = [weight.copy() for weight in recorder.steps[0]]   # Keras: the first step's weights
    for step in recorder.steps[1:]:
        average = [decay * mean + (1 - decay) * weight for mean, weight in zip(average, step)]
    kept = [variable.numpy() for variable in result.model.trainable_variables]
    assert len(recorder.steps) == 8
    for mean, weight, raw in zip(average, kept, recorder.steps[-1]):
        np.testing.assert_allclose(weight, mean, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(mean, raw) for mean, raw in zip(average, recorder.steps[-1]))
    # Validation scored the average: evaluating the kept weights gives the best epoch's val_loss.
    assert result.best["epoch"] == 2 or result.history[1]["val_loss"] >= result.history[0]["val_loss"]
    val_loss = result.model.evaluate(_splits().val, return_dict=True, verbose=0)["loss"]
    assert val_loss == pytest.approx(min(row["val_loss"] for row in result.history), rel=1e-4)


def test_gradient_accumulation_of_two_batches_is_one_batch_twice_as_large():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, NUM_CLASSES, 8).astype("int32")

    def trained(batch_size, grad_accum):
        model = _logits_model()
        engine.compile_model(model, learning_rate=0.1, weight_decay=1e-2, grad_accum=grad_accum)
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return [weight.numpy() for weight in model.weights], int(model.optimizer.iterations)

    accumulated, steps = trained(4, 2)
    whole, whole_steps = trained(8, None)
    assert steps == whole_steps == 1
    for a, b in zip(accumulated, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    untrained = [weight.numpy() for weight in _logits_model().weights]
    assert not np.allclose(accumulated[0], untrained[0])


# ## The command line: bad values, one line, exit 2, nothing written


@pytest.mark.parametrize("argv, words", [
    (["--label-smoothing", "-0.1"], "--label-smoothing must be in [0, 1)"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--grad-accum", "0"], "--grad-accum must be 1 or more"),
    (["--schedule", "linear"], "unknown schedule 'linear'"),
    (["--warmup", "1.5"], "as long as the phase"),
    (["--warmup", "-0.1"], "in [0, 1)"),
    (["--ema", "1.5"], "--ema is the average's decay"),
    (["--epochs", "3", "--steps", "30"], "give --epochs or --steps, not both"),
    (["--finetune-epochs", "3", "--finetune-steps", "30"], "give --finetune-epochs or --finetune-steps"),
    (["--steps", "-1"], "--steps must be 0 or more"),
    (["--mixup", "-0.2"], "alpha of a Beta"),
    (["--cutmix", "0", "--mixup", "inf"], "alpha of a Beta"),
])
def test_bad_tool_values_are_refused_in_one_line(tmp_path, capsys, argv, words):
    status = cli.main(["finetune", "--runs-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert status == 2 and words in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


# ## MixUp and CutMix: Keras' layers on the training batches only


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_mixing_gives_soft_training_labels_and_leaves_validation_and_the_baselines_images_alone(option):
    from headstart.recipes import data

    splits = data.load("digits", image_size=8, classes="0,1,2", labels_per_class=6, seed=0, **{option: 1.0})
    plain = data.load("digits", image_size=8, classes="0,1,2", labels_per_class=6, seed=0)
    images, labels = next(iter(splits.train_epochs(0, 1)))
    assert labels.shape == (18, 3) and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert (labels.numpy().max(axis=1) < 1.0).any()          # some rows really are mixtures
    for mixed_split, plain_split in ((splits.val, plain.val), (splits.train_plain, plain.train_plain)):
        for (a, la), (b, lb) in zip(mixed_split, plain_split):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            np.testing.assert_array_equal(la.numpy(), lb.numpy())


def test_a_mixed_run_trains_through_the_backbone_and_scores_integer_validation_labels():
    from headstart.models import backbones
    from headstart.recipes import data

    splits = data.load("digits", image_size=8, classes="0,1,2", labels_per_class=6, seed=0, mixup=0.4, cutmix=1.0)
    result = engine.fine_tune(lambda: backbones.build_classifier("resnet8", 3, 8), splits, head_epochs=2,
                              finetune_epochs=1, learning_rate=1e-2, finetune_learning_rate=1e-3,
                              options=engine.TrainingOptions(patience=5, progress="quiet"))
    assert [phase["feature_cache"] for phase in result.phases] == [False, False]
    assert any("MixUp / CutMix" in note for note in result.notes)
    assert all(math.isfinite(row["loss"]) and 0 <= row["val_accuracy"] <= 1 for row in result.history)
    assert 0 <= result.accuracy <= 1


def test_bad_mixing_alphas_are_refused_before_loading():
    from headstart.recipes import data
    from headstart.recipes.errors import UsageError

    with pytest.raises(UsageError, match="Beta"):
        data.check_source("digits", mixup=-0.2)
    with pytest.raises(UsageError, match="Beta"):
        data.check_source("digits", cutmix=float("nan"))


# ## Resuming a step budget whose epochs repeat the data


@pytest.fixture(scope="module")
def few_images():
    from headstart.recipes import data

    return lambda: data.load("digits", image_size=8, classes="0,1,2", labels_per_class=2, seed=0)


def _budgeted_run(splits, checkpoint_dir, interrupt_at=None):
    from headstart.models import backbones

    keras.utils.set_random_seed(1)
    # 6 images, one batch a pass: 40 head steps are 20 epochs of 2 passes, 30 fine-tuning steps 15 of 2.
    return engine.fine_tune(lambda: backbones.build_classifier("resnet8", 3, 8, dropout=0.3), splits, head_epochs=0,
                            finetune_epochs=0, head_steps=40, finetune_steps=30, learning_rate=1e-2,
                            finetune_learning_rate=1e-3, schedule="cosine", warmup=0.1,
                            options=engine.TrainingOptions(patience=100, progress="quiet"), checkpoint_dir=checkpoint_dir,
                            extra_callbacks=[InterruptAt(interrupt_at)] if interrupt_at is not None else ())


@pytest.mark.parametrize("interrupt_at", [7, 26])   # in the head phase (cached features), in fine-tuning
def test_a_resumed_step_budget_sees_the_batches_and_rates_of_the_uninterrupted_run(tmp_path, few_images, interrupt_at):
    reference = _budgeted_run(few_images(), tmp_path / "reference")
    assert [(phase["epochs"], phase["steps"], phase["batches_per_epoch"]) for phase in reference.phases] == [
        (20, 40, 2), (15, 30, 2)]
    with pytest.raises(Interrupted):
        _budgeted_run(few_images(), tmp_path / "resumed", interrupt_at)
    keras.backend.clear_session(free_memory=False)
    resumed = _budgeted_run(few_images(), tmp_path / "resumed")
    assert [row["epoch"] for row in resumed.history] == list(range(1, 36))
    for resumed_row, reference_row in zip(resumed.history, reference.history):
        assert resumed_row["loss"] == pytest.approx(reference_row["loss"], rel=1e-5)
    for resumed_weight, reference_weight in zip(resumed.model.weights, reference.model.weights):
        np.testing.assert_allclose(resumed_weight.numpy(), reference_weight.numpy(), rtol=1e-5, atol=1e-6)


# ## Mixed precision: Keras' dtype policies, the head and the loss in float32


@pytest.mark.parametrize("policy, compute, scaled", [("mixed_float16", "float16", True),
                                                     ("mixed_bfloat16", "bfloat16", False)])
def test_mixed_precision_keeps_variables_head_and_logits_float32_and_trains(policy, compute, scaled):
    from keras.src.optimizers.loss_scale_optimizer import LossScaleOptimizer

    from headstart.models import backbones, precision

    with precision.policy(policy):
        model = backbones.build_classifier("resnet8", NUM_CLASSES, 8)
    assert keras.config.dtype_policy().name == "float32"      # the run's policy does not leak
    engine.compile_model(model, learning_rate=1e-2)
    # float16's narrow range needs loss scaling (Keras adds it at compile); bfloat16 has float32's range.
    assert isinstance(model.optimizer, LossScaleOptimizer) == scaled
    convolutions = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == compute for layer in convolutions)
    assert all(variable.dtype == "float32" for variable in model.weights)
    assert all(layer.compute_dtype == "float32" for layer in model.get_layer("head").layers)
    images, labels = next(iter(_splits().train))
    assert model(images).dtype == "float32"
    losses = [float(model.train_on_batch(images, labels)[0]) for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


def test_a_mixed_precision_run_saves_a_model_that_loads_and_records_the_policy(tmp_path, capsys):
    import json

    from headstart.models import precision

    status = cli.main(["finetune", "--weights", "none", "--image-size", "8", "--steps", "3", "--finetune-steps", "2",
                       "--no-compare-scratch", "--no-baselines", "--precision", "mixed_float16", "--quiet",
                       "--runs-dir", str(tmp_path), "--name", "m"])
    assert status == 0, capsys.readouterr().err
    assert keras.config.dtype_policy().name == "float32"
    run = tmp_path / "finetune" / "m"
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_float16"
    import csv

    with open(run / "history.csv") as file:
        losses = [float(row["loss"]) for row in csv.DictReader(file)]
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)
    assert math.isfinite(json.loads((run / "metrics.json").read_text())["test_loss"])
    model = keras.models.load_model(run / "best.keras", compile=False)
    backbone = model.get_layer("backbone")
    assert any(layer.compute_dtype == "float16" for layer in backbone.layers)
    assert model.get_layer("head").compute_dtype == "float32"
    # The served model (raw 0-255 images in) computes the same way and gives float32 probabilities.
    from headstart.recipes import trained

    served = trained.load(run)
    raw = next(iter(served.splits().test))[0].numpy()
    logits = served.logits(raw)
    assert logits.dtype == np.float32
    # best.keras on the pipeline's own /255 images: the same network, so the same logits up to
    # float16 rounding of inputs that float32 preprocessing may round differently.
    np.testing.assert_allclose(logits, model.predict(raw / 255.0, verbose=0), atol=2e-2)


def test_a_precision_the_device_cannot_run_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from headstart.models import precision

    monkeypatch.setattr(precision, "unsupported_reason", lambda name: "NotFoundError: no Conv2D kernel for half")
    status = cli.main(["finetune", "--precision", "mixed_float16", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "cannot train in it (NotFoundError: no Conv2D kernel for half); use --precision float32" in err
    assert not any(tmp_path.iterdir())


def test_the_device_probe_passes_on_this_machine_for_every_policy():
    from headstart.models import precision

    # TensorFlow's CPU kernels cover float16 and bfloat16 convolutions, batch norm and matmuls.
    assert [precision.unsupported_reason(name) for name in precision.POLICIES] == [None, None, None]
