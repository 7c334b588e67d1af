"""Benchmark: what GradientLogger adds to an epoch, against plain `fit` and a naive callback.

    python scripts/bench_gradient_logger.py            # about 5 minutes on 2 idle CPU cores
    python scripts/bench_gradient_logger.py --every 10 100 --rounds 6

One process, one model (`headstart.models.create_model("resnet8")`, 32x32x3, 10 classes), one random
data set (2048 images, batch 64: 32 steps per epoch). Variants:

- plain: `fit` with no callback;
- logger_every_step: `GradientLogger(every_n_steps=1)`, writing its CSV to a temp dir;
- logger_default: `GradientLogger()` at its default frequency;
- naive_every_step: a callback that computes the gradients again with its own
  `tf.GradientTape` on a fixed batch after every step (what the known gradient-logging
  callbacks do), compiled with XLA like the train step;
- logger_every_N for each N given with `--every`.

Part 1, epochs: each round runs every variant once, in a rotated order, as one `fit` of
1 + `--epochs` epochs; the first epoch (tracing, XLA compilation) is dropped. Reported per
variant: the median epoch wall time and process CPU time (all threads) over all rounds and
epochs, and their ratios to plain.

Part 2, paired steps: on a shared machine epoch times move by several percent with other
processes' load, more than the 1% to be checked. So one more `fit` runs GradientLogger with
every_n_steps=2: measured and unmeasured steps alternate under the same load, and the median
of (measured step - next unmeasured step) is the in-graph cost of measuring. The host-side
cost (reading records back, writing the CSV) is timed around the logger's hooks. From these
and plain's median step time follows the overhead at every step and at the default.

Goals: every step <= 1.05x, default <= 1.01x. Results and the command that produced them
go in BENCHMARKS.md.
"""

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from headstart import models  # noqa: E402
from headstart.callbacks import GradientLogger  # noqa: E402
from headstart.callbacks.gradient_logger import DEFAULT_EVERY_N_STEPS  # noqa: E402

SAMPLES = 2048
BATCH_SIZE = 64
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of all variants (default: 4)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per fit, after one warm-up (default: 2)")
    parser.add_argument("--every", type=int, nargs="*", default=[], metavar="N",
                        help="also time GradientLogger(every_n_steps=N) for each N")
    args = parser.parse_args()
    if args.rounds < 1 or args.epochs < 1 or any(n < 1 for n in args.every):
        parser.error("--rounds, --epochs and --every must be >= 1")

    keras.utils.set_random_seed(0)
    x = np.random.rand(SAMPLES, *IMAGE_SHAPE).astype("float32")
    y = np.random.randint(0, NUM_CLASSES, SAMPLES)
    model = models.create_model("resnet8", input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = tempfile.mkdtemp(prefix="bench_gradient_logger_")

    variants = {
        "plain": lambda: [],
        "logger_every_step": lambda: [GradientLogger(log_dir=log_dir, every_n_steps=1, filename="every_step.csv")],
        "logger_default": lambda: [GradientLogger(log_dir=log_dir, filename="default.csv")],
        "naive_every_step": lambda: [NaiveGradientCallback(x[:BATCH_SIZE], y[:BATCH_SIZE])],
    }
    for n in args.every:
        variants[f"logger_every_{n}"] = lambda n=n: [GradientLogger(log_dir=log_dir, every_n_steps=n,
                                                                    filename=f"every_{n}.csv")]
    names = list(variants)
    wall_seconds = {name: [] for name in names}
    cpu_seconds = {name: [] for name in names}
    steps = SAMPLES // BATCH_SIZE
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            timer = EpochTimer()
            # The timer goes last so that the loggers' end-of-epoch work is inside the timing.
            model.fit(x, y, batch_size=BATCH_SIZE, epochs=1 + args.epochs, verbose=0,
                      callbacks=variants[name]() + [timer])
            wall_seconds[name].extend(timer.wall_seconds[1:])
            cpu_seconds[name].extend(timer.cpu_seconds[1:])
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    paired_logger = TimedGradientLogger(log_dir=log_dir, every_n_steps=2, filename="paired.csv")
    step_timer = StepTimer()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1 + 2 * args.epochs, verbose=0, callbacks=[paired_logger, step_timer])
    shutil.rmtree(log_dir)

    print(f"\nresnet8: {model.count_params()} parameters in {len(model.trainable_variables)} variables; {SAMPLES} "
          f"images 32x32x3, batch {BATCH_SIZE}, {steps} steps/epoch; {args.rounds} rounds x {args.epochs} timed epochs "
          f"per variant; GradientLogger default every_n_steps={DEFAULT_EVERY_N_STEPS}")
    print(f"{'variant':<20} {'wall s/epoch':>12} {'x plain':>8} {'cpu s/epoch':>12} {'x plain':>8}   wall min-max")
    ratios = {}
    for name in names:
        wall, cpu = statistics.median(wall_seconds[name]), statistics.median(cpu_seconds[name])
        ratios[name] = wall / statistics.median(wall_seconds["plain"]), cpu / statistics.median(cpu_seconds["plain"])
        print(f"{name:<20} {wall:12.3f} {ratios[name][0]:8.3f} {cpu:12.3f} {ratios[name][1]:8.3f}   "
              f"{min(wall_seconds[name]):.3f}-{max(wall_seconds[name]):.3f}")
    for name, goal in (("logger_every_step", 1.05), ("logger_default", 1.01)):
        verdict = ", ".join(f"{kind} {ratio:.3f}x {'met' if ratio <= goal else 'NOT met'}"
                            for kind, ratio in zip(("wall", "cpu"), ratios[name]))
        print(f"goal {name} <= {goal}x plain (epochs): {verdict}")

    # Part 2. Step i of the fit is measured when i is even; the warm-up epoch is dropped.
    timed = step_timer.seconds[steps:]
    measuring_cost = statistics.median(timed[i] - timed[i + 1] for i in range(0, len(timed) - 1, 2))
    unmeasured_step = statistics.median(timed[1::2])
    host_cost = paired_logger.hook_seconds / math.ceil(len(step_timer.seconds) / 2)
    print(f"\npaired steps ({len(timed) // 2} pairs): unmeasured step {1000 * unmeasured_step:.2f} ms (median); "
          f"a measured step costs {1000 * measuring_cost:+.3f} ms more in the graph (median paired difference) and "
          f"{1000 * host_cost:.3f} ms on the host (hooks, per logged step)")
    for name, every, goal in (("every step", 1, 1.05), ("default", DEFAULT_EVERY_N_STEPS, 1.01)):
        ratio = 1 + (measuring_cost + host_cost) / (every * unmeasured_step)
        print(f"goal {name} <= {goal}x plain (paired): {ratio:.4f}x {'met' if ratio <= goal else 'NOT met'}")


class EpochTimer(keras.callbacks.Callback):
    """Wall time and process CPU time (all threads) of each epoch, begin to end."""

    def on_train_begin(self, logs=None):
        self.wall_seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall_seconds.append(time.perf_counter() - self._start[0])
        self.cpu_seconds.append(time.process_time() - self._start[1])


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training step (with steps_per_execution 1: each batch)."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class TimedGradientLogger(GradientLogger):
    """GradientLogger that adds up the time spent in its per-batch and per-epoch hooks."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.hook_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        start = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        self.hook_seconds += time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.hook_seconds += time.perf_counter() - start


class NaiveGradientCallback(keras.callbacks.Callback):
    """The usual gradient logger: its own tape on a fixed batch after each step."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def on_train_begin(self, logs=None):
        model = self.model

        @tf.function(jit_compile=True)
        def gradient_norms(x, y):
            with tf.GradientTape() as tape:
                # training=False: the extra pass must not move batch-norm statistics.
                loss = model.loss(y, model(x, training=False))
            return [tf.norm(grad) for grad in tape.gradient(loss, model.trainable_variables)]

        self._gradient_norms = gradient_norms

    def on_train_batch_end(self, batch, logs=None):
        self.latest = [float(norm) for norm in self._gradient_norms(self.x, self.y)]


if __name__ == "__main__":
    main()
