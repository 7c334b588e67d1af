"""Benchmark: what `--deterministic` costs: the same pretraining with and without deterministic ops.

    python scripts/bench_deterministic.py [--model resnet8] [--image-size 32] [--epochs 8] [--rounds 2]

TensorFlow's op determinism is process-wide and cannot be switched off once on, so each
training runs in its own process: `headstart pretrain` on digits 0-4 with the same seed,
alternating plain and `--deterministic` for `--rounds` rounds (alternating spreads the
noise of a shared machine over both ways). Prints each run's seconds per epoch
(tracing included, the same for both), the ratio deterministic / plain, and whether
the two deterministic runs reached bit-identical metrics (they should; plain runs may not).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pretrain(args, runs_dir, name, deterministic):
    command = [sys.executable, "-m", "headstart", "pretrain", "--model", args.model, "--image-size",
               str(args.image_size), "--epochs", str(args.epochs), "--patience", str(args.epochs),
               "--seed", "0", "--name", name, "--runs-dir", runs_dir, *(["--deterministic"] if deterministic else [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    run = Path(runs_dir) / "pretrain" / name
    metrics = json.loads((run / "metrics.json").read_text())
    return {"epoch": metrics["phases"][0]["seconds_per_epoch"], "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be 1 or more")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")

    runs = {"plain": [], "deterministic": []}
    with tempfile.TemporaryDirectory() as runs_dir:
        for round_number in range(args.rounds):
            for way in runs:
                runs[way].append(pretrain(args, runs_dir, f"{way}-{round_number}", way == "deterministic"))
                print(f"round {round_number + 1} {way:>13}: {runs[way][-1]['epoch']:.3f} s/epoch, "
                      f"test accuracy {runs[way][-1]['test_accuracy']:.4f}", flush=True)
    plain = statistics.median(run["epoch"] for run in runs["plain"])
    deterministic = statistics.median(run["epoch"] for run in runs["deterministic"])
    print(f"\n{args.model} {args.image_size}px, {args.epochs} epochs, {args.rounds} rounds: "
          f"plain {plain:.3f} s/epoch, deterministic {deterministic:.3f} s/epoch, "
          f"ratio {deterministic / plain:.2f}x")
    outcomes = {(run["test_accuracy"], run["test_loss"]) for run in runs["deterministic"]}
    print(f"deterministic runs bit-identical: {'yes' if len(outcomes) == 1 else 'no'}; plain runs "
          f"{'identical' if len({(r['test_accuracy'], r['test_loss']) for r in runs['plain']}) == 1 else 'differ'}")


if __name__ == "__main__":
    main()
