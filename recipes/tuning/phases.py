"""Phase-aware search (`headstart tune --phases head,finetune`): the head first, then fine-tuning from it.

Stage 1 searches the head alone (`--head-trials` trials of `--epochs` epochs on the frozen
backbone's cached features, as populations: `headstart.recipes.tuning.vectorized`) over the
head's values (lr, weight decay, dropout, label smoothing, batch size); the fine-tuning
values (and `--mixup`) are held at their first value there. Its best trial's head is saved
(`best_head.weights.h5`). Stage 2 is an ordinary keras-tuner search (`--tuner`,
`--max-trials`) of fine-tuning trials of `--finetune-epochs` epochs, every one starting from
that saved head, over the fine-tuning rate, the unfreezing depth, weight decay, dropout and
label smoothing; the head's rate, batch size and hidden layers are the best head's.

Both stages keep keras-tuner's records: stage 1 in `head_search/` with `head_trials.csv` and
`head_summary.md`, stage 2 in `search/` with the usual trials.csv, summary.md,
best_hyperparameters.json (whose finetune_options retrain both phases: the best head's rate
and epochs, stage 2's values) and best.keras. `--resume` continues whichever stage was
interrupted (stage 1's finished trials are not rerun, its best head is the same).
"""

import copy

from headstart.recipes import options
from headstart.recipes.errors import UsageError
from headstart.recipes.tuning import distributed
from headstart.recipes.tuning import space as search_space
from headstart.recipes.tuning import vectorized

PHASES = ("head", "finetune")
HEAD_TRIALS = 50
HEAD_PROJECT = "head_search"
HEAD_PREFIX = "head_"
BEST_HEAD = "best_head.weights.h5"
# What each stage searches; the rest of the space is held fixed in it.
# MixUp too: mixed images have no cached features, so the head stage (populations on cached
# features) holds it at its first value and stage 2 searches it.
FINETUNE_ONLY = ("finetune_lr", "unfreeze", "mixup")
HEAD_CHOSEN = ("lr", "batch_size", "head_units")   # stage 2 takes these from the best head


def check(args):
    """`--phases` and `--head-trials` (raises UsageError); sets `args.phases` to a tuple or None."""
    if args.phases is None:
        if args.head_trials is not None:
            raise UsageError("--head-trials is the head stage's trials of a phase-aware search: pass "
                             "--phases head,finetune with it")
        return
    given = args.phases if isinstance(args.phases, (tuple, list)) else str(args.phases).split(",")   # checked before
    names = tuple(name.strip() for name in given)
    unknown = [name for name in names if name not in PHASES]
    if unknown:
        raise UsageError(f"--phases {','.join(names)}: unknown phase {unknown[0]!r}; write --phases head,finetune")
    if names != PHASES:
        if sorted(names) == sorted(PHASES):
            raise UsageError(f"--phases {','.join(names)}: phases out of order; the head is searched first and "
                             "fine-tuning starts from it: --phases head,finetune")
        raise UsageError(f"--phases {','.join(names)}: give both phases, --phases head,finetune (a head-only search "
                         "is --finetune-epochs 0)")
    args.phases = names
    if args.head_trials is not None:
        options.check_positive_int(args.head_trials, "--head-trials")
    args.head_trials = HEAD_TRIALS if args.head_trials is None else args.head_trials
    if args.epochs < 1 or args.finetune_epochs < 1:
        raise UsageError("--phases head,finetune needs epochs in both stages: --epochs 1 or more (head trials) "
                         "and --finetune-epochs 1 or more (fine-tuning trials)")
    if args.max_epochs is not None:
        raise UsageError("--max-epochs with --phases: give each stage's budget as --epochs and --finetune-epochs")
    if distributed.role() != distributed.STANDALONE:
        raise UsageError("--phases runs both stages in one process: start it without KERASTUNER_TUNER_ID")


def head_stage(args):
    """Stage 1's options: a head-only search of --head-trials trials over the head's values."""
    stage = copy.copy(args)
    stage.finetune_epochs, stage.max_epochs, stage.max_trials = 0, args.epochs, args.head_trials
    stage.space = {name: (fixed(spec) if name in FINETUNE_ONLY else spec) for name, spec in args.space.items()}
    if stage.tuner not in vectorized.VECTORIZED_TUNERS:
        stage.tuner = "random"   # Hyperband's rounds are for stage 2; the head stage samples at random
    return stage


def finetune_stage(args, best_head_values):
    """Stage 2's options: fine-tuning trials from the best head, over the rest of the space."""
    stage = copy.copy(args)
    stage.epochs, stage.max_epochs = 0, args.finetune_epochs
    stage.space = {name: ({"type": "fixed", "value": best_head_values[name]} if name in HEAD_CHOSEN else spec)
                   for name, spec in args.space.items()}
    return stage


def fixed(spec):
    return spec if spec["type"] == "fixed" else {"type": "fixed", "value": search_space.values_of(
        {"x": spec}, "x")[0]}


def check_population(args):
    """`--population` for stage 1, checked as a head-only search's (vectorized.check)."""
    stage = head_stage(args)
    vectorized.check(stage)
    args.population = stage.population


def search(args, run_dir, weights, strategy, make_tuner, write_results):
    """Run both stages; returns stage 2's (tuner, rows). `make_tuner(stage_args, hypermodel, project)`
    and `write_results(run_dir, tuner, stage_args, prefix, retrain)` are tune's own."""
    from headstart.recipes.tuning.hypermodel import FineTuneHyperModel

    head_args = head_stage(args)
    options.say(args, f"stage 1: head search, {args.head_trials} trials of {args.epochs} epochs"
                      + (f", {args.population} heads at a time" if args.population > 1 else ""))
    hypermodel = FineTuneHyperModel(head_args, head_args.space, args.objective, weights, strategy)
    tuner = make_tuner(head_args, hypermodel, HEAD_PROJECT)
    vectorized.run_search(tuner, hypermodel, head_args)
    rows = write_results(run_dir, tuner, head_args, HEAD_PREFIX, None)
    best_trial = tuner.oracle.get_best_trials(1)
    if not best_trial:
        return tuner, rows
    best_values = dict(best_trial[0].hyperparameters.values)
    best_head = run_dir.file(BEST_HEAD)
    tuner.get_best_models(1)[0].get_layer("head").save_weights(str(best_head))
    options.say(args, f"stage 1 best: trial {best_trial[0].trial_id}, {args.objective} {best_trial[0].score:.4f}; "
                      f"its head starts every fine-tuning trial ({best_head})")

    tuned_args = finetune_stage(args, best_values)
    options.say(args, f"stage 2: fine-tuning search ({args.tuner}), {args.finetune_epochs} epochs a trial, "
                      "each from the best head")
    hypermodel = FineTuneHyperModel(tuned_args, tuned_args.space, args.objective, weights, strategy,
                                    head_weights=str(best_head))
    tuner = make_tuner(tuned_args, hypermodel, None)
    tuner.search(verbose=int(args.verbose))
    # finetune --from-tuning retrains both phases: the best head's rate and epochs, then stage 2's values.
    retrain = {"epochs": args.epochs, **{name: best_values[name] for name in HEAD_CHOSEN}}
    return tuner, write_results(run_dir, tuner, tuned_args, "", retrain)
