"""The engine's resume checkpoint: an interrupted fine-tune continues exactly where it stopped.

The interruption here is an exception raised when an epoch begins (after the previous epoch's
checkpoint was saved), in the same process; `test_resume_cli.py` kills real processes.
The data is not shuffled, so the uninterrupted run is an exact reference.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras

from headstart import models
from headstart.recipes import engine
from headstart.recipes.checkpoint import TrainingCheckpoint
from test_engine import NUM_CLASSES, _splits   # the same tiny learnable images

HEAD_EPOCHS, FINETUNE_EPOCHS = 3, 3


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Stands in for a kill: stop the process's work when epoch `epoch` (from 0) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {epoch}")


def _model():
    keras.utils.set_random_seed(1)
    # Dropout in the head: a resumed run must also continue the dropout masks' random stream.
    return models.build_resnet((8, 8, 3), NUM_CLASSES, stage_blocks=(1, 1), stage_filters=(4, 8),
                               zero_init_residual=False, dropout=0.5)


def _fine_tune(checkpoint_dir, interrupt_at=None, **overrides):
    arguments = dict(head_epochs=HEAD_EPOCHS, finetune_epochs=FINETUNE_EPOCHS, learning_rate=1e-2,
                     finetune_learning_rate=1e-3, options=engine.TrainingOptions(patience=10),
                     checkpoint_dir=checkpoint_dir,
                     extra_callbacks=[InterruptAt(interrupt_at)] if interrupt_at is not None else ())
    arguments.update(overrides)
    return engine.fine_tune(_model, _splits(), **arguments)


def _weights(result):
    return [weight.numpy() for weight in result.model.weights]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    keras.backend.clear_session(free_memory=False)
    return _fine_tune(tmp_path_factory.mktemp("reference") / "checkpoint")


@pytest.mark.parametrize("interrupt_at, where", [
    (2, "in the head phase, on cached features"),
    (HEAD_EPOCHS, "between the phases"),
    (HEAD_EPOCHS + 1, "in the fine-tuning phase"),
])
def test_resumed_run_ends_as_the_uninterrupted_one(tmp_path, uninterrupted, interrupt_at, where):
    checkpoint_dir = tmp_path / "checkpoint"
    with pytest.raises(Interrupted):
        _fine_tune(checkpoint_dir, interrupt_at=interrupt_at)
    state, _ = TrainingCheckpoint(checkpoint_dir).load()
    assert state["epoch"] == interrupt_at          # every completed epoch was saved

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(123)               # a new process would not share the first one's RNG
    resumed = _fine_tune(checkpoint_dir)

    assert [row["epoch"] for row in resumed.history] == list(range(1, HEAD_EPOCHS + FINETUNE_EPOCHS + 1))
    assert [(p["name"], p["epochs"]) for p in resumed.phases] == [(p["name"], p["epochs"]) for p in uninterrupted.phases]
    for resumed_row, reference_row in zip(resumed.history, uninterrupted.history):
        assert resumed_row["loss"] == pytest.approx(reference_row["loss"], rel=1e-5), where
    for resumed_weight, reference_weight in zip(_weights(resumed), _weights(uninterrupted)):
        np.testing.assert_allclose(resumed_weight, reference_weight, rtol=1e-5, atol=1e-6)
    assert resumed.best == {**uninterrupted.best, "value": pytest.approx(uninterrupted.best["value"], rel=1e-5)}
    assert resumed.metrics == pytest.approx(uninterrupted.metrics, rel=1e-5)


def test_a_finished_run_resumed_again_trains_no_more(tmp_path, uninterrupted):
    checkpoint_dir = tmp_path / "checkpoint"
    first = _fine_tune(checkpoint_dir)
    again = _fine_tune(checkpoint_dir, interrupt_at=0)   # would raise if any epoch ran
    assert again.history == first.history
    for weight, reference in zip(_weights(again), _weights(first)):
        np.testing.assert_array_equal(weight, reference)


def test_nan_loss_stops_at_once_naming_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    checkpoint_dir = tmp_path / "checkpoint"

    class PoisonWeightsAt(keras.callbacks.Callback):
        """Make the loss NaN from the 3rd batch of epoch 2 (from 1), as a diverging run would."""

        def on_train_batch_begin(self, batch, logs=None):
            if self._epoch == 1 and batch == 2:
                for weight in self.model.trainable_weights:
                    weight.assign(tf.fill(weight.shape, float("nan")))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    with pytest.raises(engine.TrainingDiverged) as raised:
        _fine_tune(checkpoint_dir, extra_callbacks=[PoisonWeightsAt()])
    message = str(raised.value)
    assert "epoch 2, step 3" in message and "lower learning rate" in message
    assert str(checkpoint_dir) in message
    state, arrays = TrainingCheckpoint(checkpoint_dir).load()
    assert state["epoch"] == 1                       # the last good epoch, not deleted
    assert all(np.isfinite(weight).all() for weight in arrays["model"])
    assert raised.value.result.history[-1]["epoch"] == 1
    assert all(np.isfinite(weight.numpy()).all() for weight in raised.value.result.model.weights)


class InterruptWhenPhaseEnds(keras.callbacks.Callback):
    """Stands in for a kill after a phase's last epoch was saved, before the phase was closed."""

    def on_train_end(self, logs=None):
        raise Interrupted("interrupted as the head phase ended")


def test_resumed_after_the_last_epoch_of_a_phase_on_loaded_data(tmp_path):
    from headstart.recipes import data

    def run(**overrides):
        keras.utils.set_random_seed(1)
        splits = data.load("digits", image_size=8, classes="target", labels_per_class=5, seed=0)
        arguments = dict(head_epochs=2, finetune_epochs=2, learning_rate=1e-2, finetune_learning_rate=1e-3,
                         options=engine.TrainingOptions(patience=10), checkpoint_dir=tmp_path / "checkpoint")
        arguments.update(overrides)
        return engine.fine_tune(lambda: models.build_resnet((8, 8, 3), 5, stage_blocks=(1,), stage_filters=(4,)),
                                splits, **arguments)

    with pytest.raises(Interrupted):
        run(extra_callbacks=[InterruptWhenPhaseEnds()], finetune_epochs=0)   # the head phase only: one fit
    state, _ = TrainingCheckpoint(tmp_path / "checkpoint").load()
    assert (state["epoch"], state["phase_done"]) == (2, False)
    resumed = run()
    assert [(phase["name"], phase["epochs"]) for phase in resumed.phases] == [("head", 2), ("finetune", 2)]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
