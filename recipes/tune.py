"""Search learning rates, weight decay and dropout for the fine-tuning recipe, with keras-tuner.

    headstart tune
        Hyperband over the offline digits demo (resnet8 pretrained on digits 0-4, fine-tuned
        on digits 5-9 with 5 labels per class): every trial is `headstart finetune`'s
        two-phase fine-tune with the trial's values.
    headstart tune --tuner bayesian --max-trials 30 --lr 1e-4:1e-1 --dropout 0.2
    headstart tune --tuner grid --lr '1e-3|1e-2|1e-1' --dropout '0|0.3' --weight-decay 1e-4
    headstart tune --name NAME --resume     # continue an interrupted search (same options)
    headstart tune --tuner random --max-trials 50 --finetune-epochs 0 --augment none
        a head-only search: its trials' heads train 32 at a time (--population, see
        `recipes/tuning/vectorized.py`)
    headstart tune --phases head,finetune --augment none
        the head searched first (--head-trials), then fine-tuning trials from the best head
        (`recipes/tuning/phases.py`)

Each searched option takes a range LOW:HIGH, choices 'A|B|C' or one fixed value (see
`recipes/tuning/space.py` for the space and its defaults). A trial's budget is --epochs
(head phase) + --finetune-epochs (fine-tuning phase), Hyperband's --max-epochs; early
stopping (--patience) watches the --objective. The frozen backbone's features are computed
once for the whole search and every trial's head trains on them. A trial whose loss becomes
NaN, or that raises (out of memory, ...), is recorded as failed with its reason and the
search goes on (it stops after --max-consecutive-failures failures in a row).

Distributed: run the same command with the same --name in every process, with keras-tuner's
KERASTUNER_TUNER_ID ("chief" or a worker id), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT
set; the chief serves the trials and writes the results, workers run trials.

Writes runs/tune/<name>/: trials.csv, summary.md, search.png, best_hyperparameters.json,
best.keras, config.json, search.json (the search's definition, compared on --resume) and
search/ (keras-tuner's project: oracle, trials, checkpoints, trial_starts.jsonl); with --phases
also the head stage's head_trials.csv, head_summary.md, best_head.weights.h5 and head_search/.
"""

import argparse
import copy
import json
import os
import time
from pathlib import Path

from headstart.recipes import finetune, options, resume
from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import RunDir, check_run_name, default_run_name, run_path
from headstart.recipes.tuning import distributed, phases, vectorized
from headstart.recipes.tuning import space as search_space

# ## Defaults: a search that finishes in minutes on the digits demo, 2 CPU cores.
TUNER = "hyperband"
TUNER_NAMES = ("hyperband", "bayesian", "random", "grid")
OBJECTIVE = "val_accuracy"
# What engine.compile_model makes a classifier log, with the validation split: the
# objectives a search can be scored on (checked before anything is built).
LOGGED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
MAX_TRIALS = 20             # random, bayesian and grid; Hyperband's own schedule sets its count
HEAD_EPOCHS = 10            # per trial, phase 1
FINETUNE_EPOCHS = 10        # per trial, phase 2: 20 in all (Hyperband's max_epochs), 3 brackets at factor 3
PATIENCE = 5                # a trial of 10 + 10 epochs would never stop early at finetune's 10
HYPERBAND_FACTOR = 3
SCHEDULE = "constant"
WEIGHT_DECAY_KIND = "decoupled"
MAX_CONSECUTIVE_FAILURES = 3    # keras-tuner's default: a space where everything fails stops soon
PROJECT = "search"          # keras-tuner's project folder inside the run directory
SEARCH_FILE = "search.json"

# The finetune options that define the recipe each trial runs; with a trial's values they
# retrain it (`best_hyperparameters.json`'s finetune_options).
FIXED_OPTIONS = ("backbone", "weights", "pretrain_epochs", "data", "data_dir", "classes", "labels_per_class",
                 "image_size", "augment", "epochs", "finetune_epochs", "batch_norm", "feature_cache", "cache_dir",
                 "regularizer", "l2sp_alpha", "l2sp_beta", "layer_decay", "lr_groups", "gradual_unfreeze",
                 "patience", "seed", "deterministic", "strategy", "schedule", "warmup", "class_weight", "ema",
                 "grad_accum", "cutmix", "precision")
# Options a search may change on --resume: they do not change what a trial is.
RESUMABLE_CHANGES = ("max_trials", "max_consecutive_failures", "verbose", "quiet", "population")


def add_arguments(parser):
    finetune.add_arguments(parser)
    # The searched options take ranges and choices instead of finetune's single values,
    # and the budget is per trial: these replace finetune's flags of the same names.
    parser.conflict_handler = "resolve"
    search_space.add_arguments(parser)
    group = parser.add_argument_group("search")
    group.add_argument("--tuner", default=TUNER, help=f"{', '.join(TUNER_NAMES)}. Default: {TUNER}")
    group.add_argument("--objective", default=OBJECTIVE,
                       help=f"the logged metric trials are scored on and early stopping watches "
                            f"({', '.join(LOGGED_METRICS)}; losses are minimised). Default: {OBJECTIVE}")
    group.add_argument("--max-trials", type=int, default=None,
                       help=f"trials at most. Default: {MAX_TRIALS}, and for hyperband its schedule")
    group.add_argument("--epochs", type=int, default=HEAD_EPOCHS,
                       help=f"per trial: head-phase epochs (backbone frozen). Default: {HEAD_EPOCHS}")
    group.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS,
                       help=f"per trial: fine-tuning-phase epochs. Default: {FINETUNE_EPOCHS}")
    group.add_argument("--max-epochs", type=int, default=None,
                       help="per-trial budget (Hyperband's max_epochs): the head phase keeps --epochs of it, the "
                            "fine-tuning phase the rest. Default: --epochs + --finetune-epochs")
    group.add_argument("--patience", type=int, default=PATIENCE,
                       help=f"per trial: epochs without improvement of --objective before stopping. Default: {PATIENCE}")
    group.add_argument("--hyperband-factor", type=int, default=HYPERBAND_FACTOR,
                       help=f"Hyperband's reduction factor. Default: {HYPERBAND_FACTOR}")
    group.add_argument("--weight-decay-kind", default=WEIGHT_DECAY_KIND,
                       help="'decoupled' (AdamW's decay) or 'l2' (an L2 penalty on every kernel, AdamW without "
                            f"decay). Default: {WEIGHT_DECAY_KIND}")
    group.add_argument("--max-consecutive-failures", type=int, default=MAX_CONSECUTIVE_FAILURES,
                       help=f"stop the search after this many failed trials in a row. Default: {MAX_CONSECUTIVE_FAILURES}")
    group.add_argument("--population", type=int, default=None,
                       help="head-only searches (--finetune-epochs 0) on cached features: train this many trials' "
                            "heads together in one compiled step (random, bayesian, grid); 1 trains them one at a "
                            "time. Default: 32 when the search allows it, else 1")
    group.add_argument("--phases", default=None,
                       help="'head,finetune': search the head first (--head-trials trials of --epochs, on cached "
                            "features), then fine-tuning trials of --finetune-epochs (--max-trials), all from the "
                            "best head. Default: one joint search of both phases per trial")
    group.add_argument("--head-trials", type=int, default=None,
                       help=f"with --phases: trials of the head stage. Default: {phases.HEAD_TRIALS}")
    group.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                       help="continue the interrupted search --name (same options; --max-trials may change)")
    # Constant, not finetune's cosine: Hyperband trains a trial in rounds (epochs [0, 2), then
    # [2, 7), ...), and a schedule spans one round's phases, so it would restart every round.
    # Trials are not compared with the baselines (finetune --from-tuning does that).
    parser.set_defaults(schedule=SCHEDULE, baselines=False)


def validate(args):
    """Every check, before TensorFlow builds anything; raises UsageError. Resolves the budget and the space."""
    role = distributed.role()
    check_search_options(args)
    args.space = search_space.parse(args)
    phases.check(args)
    resolve_budget(args)
    # The run folder before the recipe's checks: these need no TensorFlow, the backbone's do.
    if role != distributed.STANDALONE and args.name is None:
        raise UsageError(f"a distributed search ({role}) needs the same --name in every process")
    # A distributed search's processes share the folder (and its lock); a standalone one has it to itself.
    shared = role != distributed.STANDALONE
    if role == distributed.WORKER:
        check_run_name("tune", args.name, args.runs_dir, overwrite=True, shared=True)   # the chief owns the folder
    elif role == distributed.CHIEF and not args.resume:
        check_new_distributed_search(args)
    else:
        check_run_name("tune", args.name, args.runs_dir, args.overwrite, resume=args.resume, shared=shared)
    validate_recipe(args)
    if args.phases:
        phases.check_population(args)
    else:
        vectorized.check(args)
    args.name = args.name or default_run_name()
    if args.resume or role == distributed.WORKER:
        check_same_search(args)


def check_search_options(args):
    if args.tuner not in TUNER_NAMES:
        raise UsageError(f"unknown --tuner {args.tuner!r}: choose one of {', '.join(TUNER_NAMES)}")
    if args.objective not in LOGGED_METRICS:
        raise UsageError(f"unknown --objective {args.objective!r}: the model logs {', '.join(LOGGED_METRICS)}")
    if args.max_trials is not None:
        options.check_positive_int(args.max_trials, "--max-trials")
    if args.max_epochs is not None:
        options.check_positive_int(args.max_epochs, "--max-epochs")
    if args.hyperband_factor is None or args.hyperband_factor < 2:
        raise UsageError(f"--hyperband-factor must be 2 or more, got {args.hyperband_factor}")
    if args.weight_decay_kind not in ("decoupled", "l2"):
        raise UsageError(f"--weight-decay-kind must be decoupled or l2, got {args.weight_decay_kind!r}")
    options.check_positive_int(args.max_consecutive_failures, "--max-consecutive-failures")
    if args.population is not None:
        options.check_positive_int(args.population, "--population")
    if args.compare_scratch:
        raise UsageError("--compare-scratch: a search trains no scratch baseline; use headstart finetune")
    if args.log_gradients:
        raise UsageError("--log-gradients: a search logs no gradients; use headstart finetune on the best trial")
    if args.from_tuning:
        raise UsageError("--from-tuning is for headstart finetune (retrain a search's best trial); narrow a new "
                         "search with --lr LOW:HIGH, --dropout LOW:HIGH, ... instead")
    if args.strategy == "multiworker":
        raise UsageError("--strategy multiworker: spread a search over machines with keras-tuner's chief/worker "
                         "mode instead (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT)")


def check_new_distributed_search(args):
    """The chief of a new distributed search: the run folder may already exist, made by a worker.

    keras-tuner makes its project folder as soon as a tuner is built, so a worker that starts
    before the chief creates `runs/tune/<name>/search/` first. Such a folder is this search's;
    only one that holds a saved search (`search.json`, written by a chief) is an earlier run.
    """
    if args.overwrite:
        raise UsageError("--overwrite in a distributed search: workers may already be writing the run folder; "
                         "remove it before starting the chief and the workers")
    check_run_name("tune", args.name, args.runs_dir, overwrite=True, shared=True)   # the name and --runs-dir checks
    path = run_path("tune", args.name, args.runs_dir)
    if (path / SEARCH_FILE).exists():
        raise UsageError(f"run {path} already holds a search: choose another --name, or pass --resume "
                         "(to the chief and the workers) to continue it")


def resolve_budget(args):
    options.check_non_negative_int(args.epochs, "--epochs")
    options.check_non_negative_int(args.finetune_epochs, "--finetune-epochs")
    if args.max_epochs is not None:
        args.epochs = min(args.epochs, args.max_epochs)
        args.finetune_epochs = args.max_epochs - args.epochs
    args.max_epochs = args.epochs + args.finetune_epochs
    if args.max_epochs < 1:
        raise UsageError("a trial needs at least one epoch: raise --epochs or --finetune-epochs")


def validate_recipe(args):
    """finetune's own checks of the model and data options, on the space's first values.

    Every block name among the --unfreeze choices is checked against the backbone too.
    """
    probe = copy.copy(args)
    for name in args.space:
        value = search_space.values_of(args.space, name)[0]
        setattr(probe, name, search_space.finetune_values({name: value})[name])
    # The run folder is checked by `validate` (it may exist: --resume, workers).
    probe.name, probe.overwrite, probe.resume = None, False, False
    finetune.validate(probe, recipe="tune")
    for unfreeze in search_space.values_of(args.space, "unfreeze"):
        if unfreeze != "all":
            choice = copy.copy(probe)
            choice.unfreeze = int(unfreeze) if unfreeze.isdigit() else unfreeze
            finetune.check_unfreeze(choice)
    # What finetune's validate resolved, trials and the saved search need too (the digits presets among it).
    for name in ("image_size", "layer_decay", "lr_groups", "gradual_unfreeze", "classes", "labels_per_class",
                 "augment"):
        setattr(args, name, getattr(probe, name))


def search_definition(args):
    """What makes two runs the same search: compared on --resume, saved as search.json."""
    excluded = {"name", "runs_dir", "overwrite", "resume", *RESUMABLE_CHANGES, *args.space}
    return json.loads(json.dumps({key: value for key, value in vars(args).items()
                                  if key not in excluded and not key.startswith("_")}, default=str))


def saved_search(args):
    """search.json: the definition, with the real paths of its file and folder options (as config.json has)."""
    definition = search_definition(args)
    return {**definition, resume.RESOLVED: resume.resolved_paths(definition)}


def check_same_search(args):
    """`--resume` (or a worker joining) with other options than the saved search would mix two searches."""
    path = run_path("tune", args.name, args.runs_dir) / SEARCH_FILE
    if not path.exists():
        if args.resume:
            raise UsageError(f"--resume: {path.parent} holds no search to continue (no {SEARCH_FILE}); "
                             "run without --resume to start it")
        return   # a worker that started before the chief wrote it
    saved, current = json.loads(path.read_text()), search_definition(args)
    for key in sorted((set(saved) | set(current)) - {resume.RESOLVED}):
        # --data ./digits and --data /home/me/digits are one folder (resolved as finetune --resume does).
        if saved.get(key) != current.get(key) and not resume.same_path(key, current.get(key), saved):
            if key == "space":
                key, was, now = next((search_space.BY_NAME[name].flag, search_space.describe(saved[key][name]),
                                      search_space.describe(current[key][name]))
                                     for name in current[key] if saved[key].get(name) != current[key][name])
            else:
                was, now = saved.get(key), current.get(key)
                key = "--" + key.replace("_", "-")
            who = "--resume: this search" if args.resume else "this worker joins a search that"
            raise UsageError(f"{who} was started with {key} {was}, not {now}; pass the same "
                             "options, or start a new search under another --name")


def search(args):
    """Run the search on validated `args`; returns (run_dir, tuner, rows) (rows: None on a worker).

    The tuner is keras-tuner's, so `tuner.oracle.trials` and `tuner.get_best_models()` work on it.
    """
    from headstart.recipes import engine
    from headstart.recipes.tuning import tuners
    from headstart.recipes.tuning.hypermodel import FineTuneHyperModel

    role = distributed.role()
    if role == distributed.STANDALONE:
        run_dir = RunDir.create("tune", args.name, args.runs_dir, args.overwrite, resume=args.resume)
    else:
        # Chief and workers share the one folder, and whichever starts first makes it
        # (checked by `validate`: a new chief refuses a folder that holds an earlier search).
        # Each holds its own tuner id's lock: two chiefs, or two workers with one id, would clash.
        run_dir = RunDir.join("tune", args.name, args.runs_dir, os.environ["KERASTUNER_TUNER_ID"])
    if role != distributed.WORKER:
        run_dir.write_json(SEARCH_FILE, saved_search(args))
        run_dir.write_json("config.json", run_config(args))
    weights = args.weights
    if weights == "digits-source":
        weights = str(finetune.pretrained_digits_backbone(args))
    elif weights == "none":
        weights = None
    strategy = engine.make_strategy(args.strategy)
    max_trials = args.max_trials or (None if args.tuner == "hyperband" else MAX_TRIALS)

    def make_tuner(stage, hypermodel, project):
        return tuners.make_tuner(stage.tuner, hypermodel, args.objective, directory=run_dir.path,
                                 project_name=project or PROJECT, max_trials=stage.max_trials or max_trials,
                                 max_epochs=stage.max_epochs, hyperband_factor=args.hyperband_factor, seed=args.seed,
                                 max_consecutive_failed_trials=args.max_consecutive_failures, strategy=strategy,
                                 quiet=getattr(args, "quiet", False))

    if not args.verbose:
        # Every trial builds and traces a new model, by design: TensorFlow's warning that
        # functions were retraced is about that, and tells the user nothing to do.
        import tensorflow as tf

        tf.get_logger().addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())
    stopped, rows = None, None
    try:
        if args.phases:
            tuner, rows = phases.search(args, run_dir, weights, strategy, make_tuner, write_results)
        else:
            hypermodel = FineTuneHyperModel(args, args.space, args.objective, weights, strategy)
            tuner = make_tuner(args, hypermodel, PROJECT)
            vectorized.run_search(tuner, hypermodel, args)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        stopped = str(error).splitlines()[0]
    if not distributed.writes_results(role):
        return run_dir, tuner, None
    if rows is None:
        rows = write_results(run_dir, tuner, args)
    if stopped:
        raise SearchStopped(stopped)
    return run_dir, tuner, rows


class SearchStopped(Exception):
    """keras-tuner stopped the search after too many failed trials in a row (results are written)."""


def run_config(args):
    from headstart.recipes.rundir import run_config as config_of

    return config_of(args, recipe="tune", role=distributed.role())


def fixed_options(args):
    """The finetune options of every trial, JSON-plain (see FIXED_OPTIONS)."""
    fixed = {name: getattr(args, name) for name in FIXED_OPTIONS if hasattr(args, name)}
    if args.weight_decay_kind != "decoupled":
        fixed["weight_decay_kind"] = args.weight_decay_kind
    return json.loads(json.dumps(fixed))


def write_results(run_dir, tuner, args, prefix="", retrain=None):
    """trials.csv, summary.md and, from a completed trial, search.png, best_hyperparameters.json
    and best.keras. `prefix`: a stage's results (`head_trials.csv`, ...: trials and summary
    only). `retrain`: values that replace the best trial's in best_hyperparameters.json's
    finetune_options (what `finetune --from-tuning` runs)."""
    from headstart.recipes.tuning import results, tuners

    starts_file = Path(tuner.project_dir) / tuners.TRIAL_STARTS
    starts = [json.loads(line) for line in starts_file.read_text().splitlines()] if starts_file.exists() else []
    rows = results.trial_rows(tuner.oracle, starts)
    run_dir.write_csv(f"{prefix}trials.csv", rows)
    header = (f"{args.tuner} search over {args.data} ({args.backbone}, weights {args.weights}), objective "
              f"{args.objective}: {sum(row['status'] == 'COMPLETED' for row in rows)} trials completed, "
              f"{sum(row['status'] == 'FAILED' for row in rows)} failed.\n\n")
    run_dir.write_text(f"{prefix}summary.md", header + results.summary_table(rows, args.objective))
    if results.ranked(rows, args.objective) and not prefix:
        run_dir.save_figure(results.plot_search(rows, args.objective), "search.png")
        best = results.best_hyperparameters(rows, args.objective, fixed_options(args), search_space.finetune_values)
        best["finetune_options"].update(search_space.finetune_values(retrain or {}))
        run_dir.write_json("best_hyperparameters.json", best)
        write_best_model(run_dir, tuner, args)
    return rows


def write_best_model(run_dir, tuner, args):
    """The best trial's network as best.keras, and as the run's complete model (`headstart.recipes.trained`)."""
    from headstart.models import backbones
    from headstart.recipes import trained

    network = tuner.get_best_models(1)[0]
    run_dir.save_model(network, "best.keras")
    splits = tuner.hypermodel.any_splits()
    trained.write(run_dir, network, trained.describe("tune", splits, args.backbone,
                                                     backbones.get_spec(args.backbone).preprocess_module), splits.val)


def run(args):
    validate(args)
    started = time.perf_counter()
    try:
        run_dir, tuner, rows = search(args)
    except SearchStopped as stopped:
        print(f"headstart: search stopped: {stopped}; results so far in {run_path('tune', args.name, args.runs_dir)}")
        return 1
    minutes = (time.perf_counter() - started) / 60
    if rows is None:
        print(f"worker {tuner.tuner_id} done ({minutes:.1f} min); the chief writes the results in {run_dir.path}")
        return 0
    print()
    if args.phases:
        print("stage 1, the head:", run_dir.file(f"{phases.HEAD_PREFIX}summary.md").read_text(), sep="\n", end="")
        print("\nstage 2, fine-tuning from the best head:")
    print(run_dir.file("summary.md").read_text(), end="")
    print(f"\nsearch took {minutes:.1f} min; run directory: {run_dir.path}")
    completed = any(row["status"] == "COMPLETED" for row in rows)
    return 0 if completed else 1
