"""Benchmark: the engine's fine-tune epoch vs. a plain hand-written Keras `fit` of the same model.

    python scripts/bench_finetune.py [--backbone resnet20] [--image-size 32] [--epochs 6] [--rounds 3]

In one run, on the same model, data and optimizer:
  1. seconds per epoch of `headstart.recipes.engine.fine_tune`'s phase 2 (everything unfrozen), with
     its callbacks (early stopping, history writer, TensorBoard) and run directory;
  2. seconds per epoch of `model.compile(AdamW) + model.fit` with no callbacks;
and prints the ratio (goal <= 1.05). Epoch times are medians, the first epoch of each
(tracing) left out. Then it reports achieved FLOP/s of a training step (the model's
FLOPs per image from its layers x images per second x 3 for forward + backward) as a
fraction of this machine's float32 matmul FLOP/s, measured by a large `tf.matmul` here.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from headstart.callbacks import EpochTimer  # noqa: E402
from headstart.models import backbones  # noqa: E402
from headstart.recipes import data, engine  # noqa: E402
from headstart.recipes.rundir import RunDir  # noqa: E402


def layer_flops(model):
    """Multiply-adds x 2 of every Conv2D / DepthwiseConv2D / Dense layer, per image (forward)."""
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, multiplier = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * kh * kw * channels * multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return total


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def matmul_flops_per_second(size=2048, repeats=10):
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul().numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        parser.error("--epochs must be 2 or more (the first epoch is left out) and --rounds 1 or more")

    spec = backbones.get_spec(args.backbone)
    splits = data.load("digits", image_size=args.image_size, batch_size=args.batch_size,
                       preprocess=spec.preprocess, seed=0)
    images = splits.num_examples["train"]

    def build():
        keras.utils.set_random_seed(0)
        return backbones.build_classifier(args.backbone, splits.num_classes, args.image_size)

    # Alternate the two ways, `--rounds` times each, and keep each way's fastest median:
    # other load on a shared 2-core machine only ever slows a round down.
    engine_epochs, plain_epochs = [], []
    for _ in range(args.rounds):
        # 1. The engine: phase 2 only (everything unfrozen), with its usual callbacks.
        engine_timer = EpochTimer()
        with tempfile.TemporaryDirectory() as folder:
            run_dir = RunDir.create("bench", "engine", root=folder)
            engine.fine_tune(build, splits, head_epochs=0, finetune_epochs=args.epochs, learning_rate=1e-3,
                             finetune_learning_rate=1e-3, batch_norm="train",
                             options=engine.TrainingOptions(patience=args.epochs), run_dir=run_dir,
                             extra_callbacks=[engine_timer])
        engine_epochs.append(statistics.median(engine_timer.seconds[1:]))

        # 2. Plain Keras: the same model, optimizer and data, no callbacks.
        model = build()
        engine.compile_model(model, learning_rate=1e-3, weight_decay=1e-4)
        plain_timer = EpochTimer()
        model.fit(splits.train, validation_data=splits.val, epochs=args.epochs, callbacks=[plain_timer],
                  verbose=0, shuffle=False)
        plain_epochs.append(statistics.median(plain_timer.seconds[1:]))

    engine_epoch, plain_epoch = min(engine_epochs), min(plain_epochs)
    print(f"{args.backbone} at {args.image_size}px, digits ({images} training images, batch {args.batch_size}), "
          f"{args.epochs} epochs each, median of epochs 2..{args.epochs}, best of {args.rounds} alternating rounds")
    print(f"  plain keras fit : {plain_epoch:.3f} s/epoch")
    print(f"  engine fine-tune: {engine_epoch:.3f} s/epoch")
    print(f"  ratio engine/plain: {engine_epoch / plain_epoch:.3f}  (goal <= 1.05)")

    flops_per_image = layer_flops(model)
    # Training throughput from the plain run; validation images are forward-only.
    forward_images = splits.num_examples["val"]
    step_flops = 3 * flops_per_image * images + flops_per_image * forward_images
    achieved = step_flops / plain_epoch
    ceiling = matmul_flops_per_second()
    print(f"  model forward FLOPs per image: {flops_per_image / 1e6:.1f} MFLOP")
    print(f"  achieved: {achieved / 1e9:.2f} GFLOP/s; float32 matmul ceiling here: {ceiling / 1e9:.1f} GFLOP/s; "
          f"fraction: {achieved / ceiling:.3f}")


if __name__ == "__main__":
    main()
