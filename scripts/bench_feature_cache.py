"""Benchmark: training a head on a frozen backbone, through the backbone every epoch vs. on cached features.

    python scripts/bench_feature_cache.py [--backbone mobilenet_v2] [--image-size 160] [--epochs 5]

In one run, the same head on the same frozen backbone and data (digits, resized), the
same epochs and seed, trained by `headstart.recipes.engine.fine_tune`'s head phase twice:
  1. through the frozen backbone every epoch (`feature_cache=False`);
  2. on features the backbone computed once (`feature_cache=True`, the default).
Prints seconds per epoch (median, first epoch excluded), the per-epoch ratio, the total
ratio with the cache's one pass included, and the final validation accuracy of both.
Offline there are no ImageNet weights, so the backbone has random weights (`--weights`
takes `imagenet` where there is internet): the speed is the same; the accuracy of a head
on random features is low, and what matters is that both ways reach the same.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from headstart.callbacks import EpochTimer  # noqa: E402
from headstart.models import backbones  # noqa: E402
from headstart.recipes import data, engine  # noqa: E402


def head_phase(splits, args, feature_cache):
    keras.utils.set_random_seed(0)
    timer = EpochTimer()
    started = time.perf_counter()
    result = engine.fine_tune(
        lambda: backbones.build_classifier(args.backbone, splits.num_classes, args.image_size,
                                           weights=args.weights),
        splits, head_epochs=args.epochs, finetune_epochs=0, learning_rate=1e-3, finetune_learning_rate=1e-4,
        options=engine.TrainingOptions(patience=args.epochs, feature_cache=feature_cache),
        extra_callbacks=[timer])
    total = time.perf_counter() - started
    phase = result.phases[0]
    return {"epoch": statistics.median(timer.seconds[1:]), "total": total,
            "cache": phase["feature_cache_seconds"] or 0.0, "fit": phase["seconds"],
            "val_accuracy": result.history[-1]["val_accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more (the first epoch is left out)")

    spec = backbones.check_backbone_options(args.backbone, args.image_size, args.weights)
    splits = data.load("digits", image_size=args.image_size, preprocess=spec.preprocess, seed=0)
    through = head_phase(splits, args, feature_cache=False)
    cached = head_phase(splits, args, feature_cache=True)

    print(f"{args.backbone} at {args.image_size}px (weights {args.weights}), digits: "
          f"{splits.num_examples['train']} train / {splits.num_examples['val']} val images, {args.epochs} epochs")
    print(f"  through the frozen backbone: {through['epoch']:.3f} s/epoch, head phase {through['fit']:.1f} s")
    print(f"  on cached features         : {cached['epoch']:.3f} s/epoch, head phase {cached['fit']:.1f} s "
          f"+ cache built once in {cached['cache']:.1f} s")
    print(f"  per-epoch ratio: {through['epoch'] / cached['epoch']:.1f}x  (goal >= 10x)")
    print(f"  total ratio (cache included): {through['fit'] / (cached['fit'] + cached['cache']):.1f}x")
    print(f"  final val accuracy: through {through['val_accuracy']:.4f}, cached {cached['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
