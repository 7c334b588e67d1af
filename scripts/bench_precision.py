"""Benchmark: a training step under float32, mixed_float16 and mixed_bfloat16, in one run.

    python scripts/bench_precision.py                       # about a minute on 2 CPU cores
    python scripts/bench_precision.py --backbone resnet20 --image-size 64 --rounds 5

One process; per policy, the same classifier (`headstart.models.backbones.build_classifier`,
random weights) built under `headstart.models.precision.policy`, compiled as the engine
compiles it (AdamW; Keras adds loss scaling for float16), and trained on one fixed batch of
random images. Each round times every policy in a rotated order (the first calls, which
trace and compile, are dropped), so the machine's changing load falls on all of them alike.
Reported: the median step time per policy and its ratio to float32. Results and the command
go in BENCHMARKS.md.
"""

import argparse
import statistics
import time

import numpy as np

from headstart.models import backbones, precision
from headstart.recipes import engine


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per policy per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, 10, args.batch_size)
    models = {}
    for name in precision.POLICIES:
        with precision.policy(name):
            model = backbones.build_classifier(args.backbone, 10, args.image_size)
        engine.compile_model(model, learning_rate=1e-3)
        for _ in range(2):   # tracing and the first run
            model.train_on_batch(images, labels)
        models[name] = model

    times = {name: [] for name in models}
    names = list(models)
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            for _ in range(args.steps):
                start = time.perf_counter()
                models[name].train_on_batch(images, labels)
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["float32"])
    print(f"{args.backbone}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{args.rounds} rounds x {args.steps} steps per policy")
    print(f"{'policy':<16} {'median step':>12} {'vs float32':>11}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<16} {median * 1000:>9.1f} ms {median / base:>10.2f}x")


if __name__ == "__main__":
    main()
