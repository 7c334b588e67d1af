"""The README's results table: ways to use a pretrained backbone on the offline few-label task.

    python scripts/transfer_table.py [--seeds 0 1 2 3 4] [--methods NAME ...] [--runs-dir /tmp/transfer-table]

Task: digits 5-9 with 5 labelled images per class (the `headstart finetune` default),
backbone `resnet8` pretrained on digits 0-4 (one pretraining per seed, cached). Each method
is the recipe's own code path (`headstart.recipes.finetune` / `headstart.recipes.semisupervised`
through `headstart.recipes.cli.options_for`) with the recipe's defaults otherwise, run once per
seed. The baselines (logistic regression on the pixels, a linear probe on the frozen
backbone's pooled features) are the ones every finetune run fits on its own images; the
table gives the mean and the standard deviation of the test accuracy over seeds, and the
mean wall time of a run.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from headstart.recipes import finetune, semisupervised  # noqa: E402
from headstart.recipes.cli import options_for  # noqa: E402

# method -> finetune options on top of the recipe's defaults. The first ("the default
# recipe") also gives the baselines, which every run fits on the same images.
METHODS = {
    "the default recipe (converged head, cosine schedule)": dict(),
    # The whole budget through the network at the head's rate, batch norm training: from scratch.
    "scratch (same resnet8, random init, same budget and schedule)": dict(
        weights="none", steps=0, finetune_steps=finetune.HEAD_STEPS + finetune.FINETUNE_STEPS,
        finetune_lr=finetune.LEARNING_RATE, batch_norm="train"),
    "frozen backbone + new head only": dict(finetune_steps=0),
    "constant learning rate instead of cosine": dict(schedule="constant"),
    "one-cycle schedule instead of cosine": dict(schedule="onecycle", warmup=None),
    "the old budget: 10 + 20 epochs, constant rate": dict(epochs=10, finetune_epochs=20, schedule="constant"),
    "+ label smoothing 0.1": dict(label_smoothing=0.1),
    "+ MixUp (alpha 0.2)": dict(mixup=0.2),
    "+ CutMix (alpha 1.0)": dict(cutmix=1.0),
    "+ EMA of the weights (decay 0.99)": dict(ema=0.99),
    "+ augmentation (rotation, zoom)": dict(augment="rotation,zoom"),
    "+ discriminative rates (layer decay 0.5)": dict(layer_decay=0.5),
    "+ gradual unfreezing (a block every 3 epochs)": dict(gradual_unfreeze="3"),
    "+ L2-SP (alpha 0.01, beta 1e-4)": dict(regularizer="l2sp", l2sp_alpha=1e-2, l2sp_beta=1e-4),
}
SEMISUPERVISED = "autoencoder-initialised conv encoder (own architecture, 16 px)"
BASELINES = {"pixels": "baseline: logistic regression on the pixels (C chosen on validation)",
             "linear_probe": "baseline: linear probe on the frozen backbone's features (C chosen on validation)"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="run only the methods whose name contains one of these words")
    parser.add_argument("--runs-dir", default="/tmp/transfer-table")
    args = parser.parse_args()

    chosen = [method for method in [*METHODS, SEMISUPERVISED]
              if args.methods is None or any(word in method for word in args.methods)]
    rows = {}
    for number, method in enumerate(chosen):
        accuracies, seconds = [], []
        for seed in args.seeds:
            started = time.perf_counter()
            if method == SEMISUPERVISED:
                run_args = options_for("semisupervised", seed=seed, runs_dir=args.runs_dir, overwrite=True,
                                       name=f"semi-seed{seed}", labels_per_class="5", quiet=True, baselines=False)
                semisupervised.validate(run_args)
                _, results, _ = semisupervised.semisupervised(run_args)
                accuracies.append(results[5]["autoencoder"])
            else:
                run_args = options_for("finetune", seed=seed, runs_dir=args.runs_dir, overwrite=True, quiet=True,
                                       name=f"{number}-seed{seed}", compare_scratch=False,
                                       baselines=number == 0, **METHODS[method])
                finetune.validate(run_args)
                run_dir, results = finetune.finetune(run_args)
                accuracies.append(results["transfer"].accuracy)
                if number == 0:
                    baselines = json.loads(run_dir.file("metrics.json").read_text())["baselines"]
                    for name, label in BASELINES.items():
                        if name in baselines:   # no probe without a pretrained backbone
                            rows.setdefault(label, ([], []))[0].append(baselines[name]["accuracy"])
                            rows[label][1].append(baselines[name]["seconds"])
            seconds.append(time.perf_counter() - started)
        rows[method] = (accuracies, seconds)
        print(method, [round(a, 3) for a in accuracies], flush=True)

    print(f"\ndigits 5-9, 5 labels per class, test accuracy over seeds {args.seeds}:\n")
    print("| method | mean | std | per seed | run time (s) |")
    print("|---|---|---|---|---|")
    for method, (values, times) in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {method} | {statistics.mean(values):.3f} | {spread:.3f} | "
              f"{', '.join(f'{v:.3f}' for v in values)} | {statistics.mean(times):.0f} |")


if __name__ == "__main__":
    main()
