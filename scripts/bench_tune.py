"""Benchmark: `headstart tune` on cached features vs. through the frozen backbone, and Hyperband vs. random search.

    python scripts/bench_tune.py [--trials 8] [--head-epochs 10] [--max-epochs 9] [--labels-per-class 5] [--seed 0]
                                 [--population-trials 50] [--population 32] [--phase-trials 8]
                                 [--finetune-epochs 10] [--parts a,b,c,d]

In one run, on one task (digits 5-9 with --labels-per-class labelled images per class,
--backbone pretrained on digits 0-4 by `headstart pretrain`, reused from --runs-dir/pretrain
when it is there), every search through `headstart.recipes.tune`'s own code with the same --seed:
  (a) a head-only random search (`--finetune-epochs 0`: every trial trains a head on the
      frozen backbone) of --trials trials of --head-epochs epochs, twice: on the backbone's
      features computed once for the whole search (`--feature-cache`, the default) and
      through the frozen backbone every epoch (`--no-feature-cache`). Prints trials per
      minute (the whole search's wall time: model builds and the cache's one pass included),
      the median seconds a trial trained, and the ratios.
  (b) Hyperband and random search over the same default space, with the same per-trial
      budget (--max-epochs: a third head phase, the rest fine-tuning) and seed; random search
      gets as many full trials as Hyperband's schedule spends epochs. Prints the best
      val_accuracy each had reached after spending a given number of epochs (all trials'
      epochs run, summed in the order the trials ran), then the final best and total epochs.
  (c) a head-only random search of --population-trials trials of --head-epochs epochs on
      cached features (augmentation off, which caching needs), twice with the same seed:
      one trial at a time (`--population 1`, keras-tuner's own loop through the engine) and
      --population heads trained together. Prints trials per minute (whole searches' wall
      time), the ratio, and each search's best val_accuracy with the spread of val_accuracy
      over the top five trials.
  (d) the same budget of epochs two ways, augmentation off, same seed: a joint random search
      of --phase-trials trials of --head-epochs + --finetune-epochs epochs, and
      `--phases head,finetune` with --phase-trials head trials (as populations) then
      --phase-trials fine-tuning trials from the best head. Prints each one's best
      val_accuracy, the test accuracy of its best.keras, and its wall time.
--parts picks which of (a), (b), (c), (d) run. The searches run in a temporary folder that is deleted at the end.
"""

import argparse
import contextlib
import io
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from headstart.models import backbones  # noqa: E402
from headstart.recipes import finetune, tune  # noqa: E402
from headstart.recipes.cli import options_for  # noqa: E402

OBJECTIVE = "val_accuracy"
BUDGET_ROWS = 8   # rows of the epochs -> best objective table


def pretrained_backbone(args):
    """The backbone pretrained on digits 0-4, as `headstart finetune` makes and caches it."""
    recipe = options_for("finetune", backbone=args.backbone, image_size=args.image_size, runs_dir=args.runs_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        return str(finetune.pretrained_digits_backbone(recipe))


def run_search(folder, name, args, weights, with_tuner=False, **settings):
    """One `headstart tune` search; returns (trials.csv rows in the order they ran, wall seconds)
    (and the tuner, `with_tuner`)."""
    options = options_for("tune", backbone=args.backbone, weights=weights, image_size=args.image_size,
                          labels_per_class=args.labels_per_class, objective=OBJECTIVE, seed=args.seed,
                          runs_dir=folder, name=name, **settings)
    tune.validate(options)
    started, cpu_started = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):   # one line per trial; the tables below say it all
        _, tuner, rows = tune.search(options)
    seconds = time.perf_counter() - started
    run_search.cpu_seconds = time.process_time() - cpu_started   # this process's CPU, all threads
    failed = [row for row in rows if row["status"] != "COMPLETED"]
    if failed:
        print(f"  note: {len(failed)} {name} trial(s) failed: {failed[0]['reason']}")
    rows = sorted(rows, key=lambda row: int(row["trial_id"]))
    return (rows, seconds, tuner) if with_tuner else (rows, seconds)


def cache_comparison(folder, args, weights):
    head_only = dict(tuner="random", max_trials=args.trials, epochs=args.head_epochs, finetune_epochs=0,
                     patience=args.head_epochs)   # no early stop: both ways train the same epochs
    print(f"(a) head-only random search, {args.trials} trials of {args.head_epochs} epochs "
          "(finetune epochs 0, no early stopping)")
    measured = {}
    for label, feature_cache in (("cached features", True), ("through the backbone", False)):
        rows, seconds = run_search(folder, f"cache-{feature_cache}", args, weights, feature_cache=feature_cache,
                                   **head_only)
        per_trial = statistics.median(row["seconds"] for row in rows if row["seconds"] is not None)
        measured[label] = (len(rows) / (seconds / 60), per_trial, seconds)
        print(f"  {label:<21}: {measured[label][0]:5.1f} trials/min (search {seconds:5.1f} s), "
              f"median {per_trial:.2f} s training per trial")
    (cached, cached_trial, _), (through, through_trial, _) = measured.values()
    print(f"  ratio: {cached / through:.2f}x trials per minute, {through_trial / cached_trial:.2f}x per trial's "
          "training")


def best_after(rows, budget):
    """The best objective among trials that finished within `budget` epochs spent (None before the first)."""
    spent, best = 0, None
    for row in rows:
        spent += row["epochs"] or 0
        if spent > budget:
            break
        if row["status"] == "COMPLETED" and row[OBJECTIVE] is not None:
            best = row[OBJECTIVE] if best is None else max(best, row[OBJECTIVE])
    return best


def tuner_comparison(folder, args, weights):
    head = max(1, args.max_epochs // 3)
    budget = dict(epochs=head, finetune_epochs=args.max_epochs - head)
    print(f"\n(b) Hyperband vs. random search, {args.max_epochs} epochs per trial at most "
          f"({head} head + {args.max_epochs - head} fine-tuning), default search space, seed {args.seed}")
    hyperband, hyperband_seconds = run_search(folder, "hyperband", args, weights, tuner="hyperband", **budget)
    hyperband_epochs = sum(row["epochs"] or 0 for row in hyperband)
    random_trials = max(1, round(hyperband_epochs / args.max_epochs))
    random, random_seconds = run_search(folder, "random", args, weights, tuner="random", max_trials=random_trials,
                                        **budget)
    random_epochs = sum(row["epochs"] or 0 for row in random)

    print(f"  | epochs spent | best {OBJECTIVE}, hyperband | best {OBJECTIVE}, random |")
    print("  |---:|---:|---:|")
    most = max(hyperband_epochs, random_epochs)
    for step in range(1, BUDGET_ROWS + 1):
        spent = math.ceil(most * step / BUDGET_ROWS)
        cells = [best_after(rows, spent) for rows in (hyperband, random)]
        print(f"  | {spent} | " + " | ".join("-" if cell is None else f"{cell:.4f}" for cell in cells) + " |")
    for label, rows, epochs, seconds in (("hyperband", hyperband, hyperband_epochs, hyperband_seconds),
                                         ("random", random, random_epochs, random_seconds)):
        print(f"  {label:<9}: best {best_after(rows, epochs):.4f} after {epochs} epochs in {len(rows)} trials "
              f"({seconds:.0f} s)")


def population_comparison(folder, args, weights):
    settings = dict(tuner="random", max_trials=args.population_trials, epochs=args.head_epochs, finetune_epochs=0,
                    augment="none")
    print(f"\n(c) head-only random search, {args.population_trials} trials of {args.head_epochs} epochs on cached "
          f"features (augmentation off), patience {tune.PATIENCE}, seed {args.seed}")
    measured, cpu, searches = {}, {}, []
    for label, population in (("one at a time", 1), (f"population {args.population}", args.population)):
        rows, seconds = run_search(folder, f"population-{population}", args, weights, population=population,
                                   **settings)
        completed = sorted((row for row in rows if row["status"] == "COMPLETED"), key=lambda row: -row[OBJECTIVE])
        searches.append({row["trial_id"]: row[OBJECTIVE] for row in completed})
        measured[label] = len(rows) / (seconds / 60)
        cpu[label] = run_search.cpu_seconds
        scores = [row[OBJECTIVE] for row in completed]
        print(f"  {label:<15}: {measured[label]:6.1f} trials/min (search {seconds:5.1f} s, {cpu[label]:5.1f} CPU s, "
              f"{len(rows)} trials), "
              f"best {OBJECTIVE} {scores[0]:.4f} (trial {completed[0]['trial_id']}), top five "
              f"{scores[min(4, len(scores) - 1)]:.4f}-{scores[0]:.4f}")
    sequential, together = measured.values()
    # The machine is shared: CPU seconds (this process's) are less sensitive to other processes than wall time.
    print(f"  ratio: {together / sequential:.1f}x trials per minute (wall), "
          f"{cpu['one at a time'] / cpu[f'population {args.population}']:.1f}x less CPU time")
    # The same seed draws the same values in both: the trials can be compared one to one.
    (one, many), best = searches, next(iter(searches[0]))
    differences = [abs(one[trial] - many[trial]) for trial in one if trial in many]
    print(f"  one-at-a-time's best trial {best} scored {many.get(best, float('nan')):.4f} as a population's head; "
          f"over the {len(differences)} trials, |difference| median {statistics.median(differences):.4f}, "
          f"largest {max(differences):.4f}")


def test_accuracy(tuner, folder, name):
    """The accuracy of the search's best.keras on the test split."""
    import keras

    model = keras.saving.load_model(os.path.join(folder, "tune", name, "best.keras"))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model.evaluate(tuner.hypermodel.any_splits().test, verbose=0, return_dict=True)["accuracy"]


def phases_comparison(folder, args, weights):
    trials, head, tuned = args.phase_trials, args.head_epochs, args.finetune_epochs
    budget = trials * (head + tuned)
    print(f"\n(d) joint search vs --phases head,finetune, {budget} epochs each (augmentation off, random, seed "
          f"{args.seed}, patience {tune.PATIENCE})")
    common = dict(tuner="random", max_trials=trials, epochs=head, finetune_epochs=tuned, augment="none")
    searches = (("joint", f"joint: {trials} trials of {head} + {tuned} epochs", {}),
                ("phases", f"phases: {trials} head trials of {head}, then {trials} fine-tuning trials of {tuned}",
                 dict(phases="head,finetune", head_trials=trials)))
    for name, label, settings in searches:
        rows, seconds, tuner = run_search(folder, name, args, weights, with_tuner=True, **common, **settings)
        best = max(row[OBJECTIVE] for row in rows if row["status"] == "COMPLETED")
        print(f"  {label}: best {OBJECTIVE} {best:.4f}, test accuracy of its best.keras "
              f"{test_accuracy(tuner, folder, name):.4f}, {seconds:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=finetune.BACKBONE, help="one of the project's own backbones")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--labels-per-class", type=int, default=finetune.LABELS_PER_CLASS)
    parser.add_argument("--trials", type=int, default=8, help="(a): trials per search")
    parser.add_argument("--head-epochs", type=int, default=10, help="(a): epochs per trial")
    parser.add_argument("--max-epochs", type=int, default=9, help="(b): epochs per trial at most (Hyperband's)")
    parser.add_argument("--population-trials", type=int, default=50, help="(c): trials per search")
    parser.add_argument("--population", type=int, default=32, help="(c): heads trained together")
    parser.add_argument("--phase-trials", type=int, default=8, help="(d): trials of the joint search, and of each stage")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="(d): fine-tuning epochs per trial")
    parser.add_argument("--parts", default="a,b,c,d", help="which comparisons to run: a, b, c, d (comma list)")
    parser.add_argument("--seed", type=int, default=0, help="of every search (the pretrained backbone's is 0)")
    parser.add_argument("--runs-dir", default="runs", help="where the pretrained backbone is cached")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or parts - {"a", "b", "c", "d"}:
        parser.error(f"--parts {args.parts!r}: a comma list of a, b, c, d")
    for name in ("trials", "head_epochs", "labels_per_class", "image_size", "population_trials", "population",
                 "phase_trials", "finetune_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.max_epochs < 3:
        parser.error("--max-epochs must be 3 or more (Hyperband needs room for two rounds at factor 3)")
    if args.backbone not in backbones.list_backbones() or backbones.get_spec(args.backbone).family != "own":
        parser.error(f"--backbone {args.backbone!r}: pretraining on digits needs one of the project's own backbones")

    weights = pretrained_backbone(args)
    print(f"{args.backbone} pretrained on digits 0-4 ({weights}), digits 5-9 with {args.labels_per_class} "
          f"labels per class, {args.image_size}px, objective {OBJECTIVE}\n")
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as folder:
        if "a" in parts:
            cache_comparison(folder, args, weights)
        if "b" in parts:
            tuner_comparison(folder, args, weights)
        if "c" in parts:
            population_comparison(folder, args, weights)
        if "d" in parts:
            phases_comparison(folder, args, weights)


if __name__ == "__main__":
    main()
