import numpy as np

import keras

from headstart.callbacks import EpochTimer


def test_epoch_timer_records_one_positive_duration_per_epoch_and_restarts_per_fit():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    timer = EpochTimer()
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    model.fit(x, y, epochs=3, verbose=0, callbacks=[timer])
    assert len(timer.seconds) == 3 and all(seconds > 0 for seconds in timer.seconds)
