"""fastai's one-cycle learning-rate schedule as a Keras `LearningRateSchedule` (see `headstart.models.schedules`)."""

import math

import keras

from headstart.models.schedules import ONECYCLE_DIV, ONECYCLE_DIV_FINAL


@keras.saving.register_keras_serializable(package="headstart")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle learning rate (`fit_one_cycle`'s `combined_cos`), by step.

    Args:
        max_learning_rate: the peak rate, reached after `warmup_steps`.
        total_steps: the phase's steps; the rate reaches its final value there.
        warmup_steps: steps of the rising half-cosine from `max_learning_rate / div`.
        div: the start is `max_learning_rate / div`. Defaults to `25`.
        div_final: the end is `max_learning_rate / (div * div_final)`. Defaults to `1e5`.
    """

    def __init__(self, max_learning_rate, total_steps, warmup_steps, div=ONECYCLE_DIV, div_final=ONECYCLE_DIV_FINAL):
        self.max_learning_rate, self.total_steps, self.warmup_steps = max_learning_rate, total_steps, warmup_steps
        self.div, self.div_final = div, div_final

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        peak = ops.cast(self.max_learning_rate, "float32")
        start, end = peak / self.div, peak / (self.div * self.div_final)
        warm = float(max(self.warmup_steps, 0))
        rest = float(max(self.total_steps - self.warmup_steps, 1))

        def cosine(low, high, fraction):   # from `low` at 0 to `high` at 1
            fraction = ops.clip(fraction, 0.0, 1.0)
            return high + (low - high) * (1.0 + ops.cos(math.pi * fraction)) / 2.0

        rising = cosine(start, peak, step / max(warm, 1.0))
        falling = cosine(peak, end, (step - warm) / rest)
        return ops.where(step < warm, rising, falling)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "div": self.div, "div_final": self.div_final}
