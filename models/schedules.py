"""Learning-rate schedules of a phase: constant, warmup then cosine decay, and one-cycle.

Each phase gets its own schedule over its own step budget (the engine compiles a new
optimizer per phase, so the optimizer's `iterations` count the phase's steps; a resumed
run restores them, and the schedule goes on where it was).

- `constant`: the phase's learning rate throughout.
- `cosine`: linear warmup from 0 to the rate over `warmup` of the phase's steps, then
  cosine decay to 0 over the rest (Keras' own `CosineDecay`, with its warmup).
- `onecycle`: fastai's `fit_one_cycle` rate: cosine from rate/25 up to the rate over
  `warmup` of the steps (fastai's `pct_start`, 0.25 when not given), then cosine down to
  rate/(25 * 1e4). fastai also cycles Adam's beta_1 the other way; that part is not done.

The names and checks need no Keras (the command line checks them before TensorFlow
starts); `OneCycle` is in `headstart.models.one_cycle`.
"""

import math

SCHEDULES = ("constant", "cosine", "onecycle")
# fastai's defaults for fit_one_cycle: div, div_final, pct_start.
ONECYCLE_DIV, ONECYCLE_DIV_FINAL, ONECYCLE_WARMUP = 25.0, 1e5, 0.25


def check(kind, warmup):
    """The error message for a bad schedule or warmup, or None."""
    if kind not in SCHEDULES:
        return f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}"
    if warmup is not None and (not math.isfinite(warmup) or not 0 <= warmup < 1):
        return (f"warmup is a fraction of each phase's steps, in [0, 1); got {warmup}"
                + (" (a warmup as long as the phase or longer leaves no steps to decay)" if warmup >= 1 else ""))
    return None


def warmup_steps(kind, warmup, total_steps):
    """Steps of warmup for a phase of `total_steps`: `warmup` of them (None: 0, or 25% for one-cycle)."""
    if warmup is None:
        warmup = ONECYCLE_WARMUP if kind == "onecycle" else 0.0
    return int(round(warmup * total_steps))


def make(kind, learning_rate, total_steps, warmup=None):
    """The `learning_rate` to give a Keras optimizer: a float, or a `LearningRateSchedule`."""
    message = check(kind, warmup)
    if message:
        raise ValueError(message)
    if kind == "constant" or total_steps < 1:
        return learning_rate
    import keras

    from headstart.models.one_cycle import OneCycle

    warm = warmup_steps(kind, warmup, total_steps)
    if kind == "cosine":
        if warm == 0:
            return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total_steps - warm, warmup_target=learning_rate,
                                                      warmup_steps=warm)
    return OneCycle(learning_rate, total_steps, warm)
