"""The README's results table: ways to use a pretrained backbone on the offline few-label task.

    python scripts/transfer_table.py [--seeds 0 1 2] [--runs-dir /tmp/transfer-table]

Task: digits 5-9 with 5 labelled images per class (the `headstart finetune` default),
backbone `resnet8` pretrained on digits 0-4 (one pretraining per seed, cached). Each method
is the recipe's own code path (`headstart.recipes.finetune` / `headstart.recipes.semisupervised` through
`headstart.recipes.cli.options_for`), run once per seed; the table gives the mean and the standard
deviation of the test accuracy over seeds, and the mean wall time of the run.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from headstart.recipes import finetune, semisupervised  # noqa: E402
from headstart.recipes.cli import options_for  # noqa: E402

# method -> finetune options on top of the recipe's defaults
METHODS = {
    "scratch (same resnet8, random init)": dict(weights="none", epochs=0, finetune_epochs=30, finetune_lr=1e-2,
                                                 batch_norm="train"),
    "frozen backbone + new head": dict(finetune_epochs=0, epochs=30),
    "two-phase fine-tune": dict(),
    "two-phase + discriminative rates (layer decay 0.5)": dict(layer_decay=0.5),
    "two-phase + gradual unfreezing (a block every 3 epochs)": dict(gradual_unfreeze="3"),
    "two-phase + L2-SP (alpha 0.01, beta 1e-4)": dict(regularizer="l2sp", l2sp_alpha=1e-2, l2sp_beta=1e-4),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="/tmp/transfer-table")
    args = parser.parse_args()

    rows = {}
    for method, overrides in METHODS.items():
        accuracies, seconds = [], []
        for seed in args.seeds:
            run_args = options_for("finetune", seed=seed, runs_dir=args.runs_dir, overwrite=True,
                                   name=f"{len(rows)}-seed{seed}", compare_scratch=False, **overrides)
            finetune.validate(run_args)
            started = time.perf_counter()
            _, results = finetune.finetune(run_args)
            seconds.append(time.perf_counter() - started)
            accuracies.append(results["transfer"].accuracy)
        rows[method] = (accuracies, seconds)
        print(method, [round(a, 3) for a in accuracies], flush=True)

    accuracies, seconds = [], []
    for seed in args.seeds:
        run_args = options_for("semisupervised", seed=seed, runs_dir=args.runs_dir, overwrite=True,
                               name=f"semi-seed{seed}", labels_per_class="5")
        semisupervised.validate(run_args)
        started = time.perf_counter()
        _, results, _ = semisupervised.semisupervised(run_args)
        seconds.append(time.perf_counter() - started)
        accuracies.append(results[5]["autoencoder"])
    rows["autoencoder-initialised conv encoder (own architecture, 16 px)"] = (accuracies, seconds)

    print(f"\ndigits 5-9, 5 labels per class, test accuracy over seeds {args.seeds}:\n")
    print("| method | mean | std | per seed | run time (s) |")
    print("|---|---|---|---|---|")
    for method, (values, times) in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {method} | {statistics.mean(values):.3f} | {spread:.3f} | "
              f"{', '.join(f'{v:.3f}' for v in values)} | {statistics.mean(times):.0f} |")


if __name__ == "__main__":
    main()
