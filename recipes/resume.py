"""`--resume`: continue a killed run, with exactly the options it was started with.

A training run writes its resolved options (`config.json`) before its first epoch and its
`metrics.json` when it ends; the engine's checkpoint (`headstart.recipes.checkpoint`) holds the
training state in between. Resuming with other options would mix two runs in one folder,
so it is refused, as is resuming a run that already finished.

Paths are compared resolved: `--data ./flowers` and `--data /home/me/flowers` are one folder.
"""

import contextlib
import json
import os

from headstart.recipes.errors import TrainingDiverged, UsageError
from headstart.recipes.rundir import run_config

# Options that name a file or folder: compared resolved (config.json records them so when the
# run starts, since a relative path means another folder from another working directory).
PATH_OPTIONS = ("data", "data_dir", "cache_dir", "weights", "from_tuning")
RESOLVED = "resolved_paths"
# Options that do not change what is trained, so they may differ on --resume. The run was
# found by --name in --runs-dir: however they were spelled, they name this run.
CHANGEABLE = {"resume", "overwrite", "verbose", "quiet", "name", "runs_dir", RESOLVED}


def add_argument(group):
    group.add_argument("--resume", action="store_true",
                       help="continue the run --name from its last completed epoch (after a crash or a kill), "
                            "with the options it was started with")


def check(args, recipe, path):
    """Refuse `--resume` of run `path` when it cannot continue; call after `args` are resolved."""
    if not args.resume:
        return
    if (path / "metrics.json").exists():
        raise UsageError(f"--resume: run {path} already finished (metrics.json is there); "
                         "start a new run with another --name")
    config_path = path / "config.json"
    if not config_path.exists():
        raise UsageError(f"--resume: {path} holds no config.json, so it was not started by headstart {recipe}; "
                         "use another --name, or --overwrite to start it again")
    check_checkpoints(path)
    saved = json.loads(config_path.read_text())
    now = _plain(run_config(args, recipe=recipe))
    for key in sorted(set(now) | set(saved)):
        if key in CHANGEABLE:
            continue
        if now.get(key) != saved.get(key) and not same_path(key, now.get(key), saved):
            raise UsageError(f"--resume: run {path} was started with {key}={saved.get(key)!r}, not "
                             f"{now.get(key)!r}; pass the same options to continue it, or start a new run")


def check_checkpoints(path):
    """Before any work: every checkpoint of the run has an intact save to continue from
    (`CheckpointDamaged`, exit 2, when one has none); the engine says which damaged ones it skips."""
    from headstart.recipes.checkpoint import TrainingCheckpoint, checkpoint_folders

    for folder in checkpoint_folders(path):
        TrainingCheckpoint(folder).check()


def start(run_dir, args, recipe):
    """Record the run's resolved options before training starts (on --resume they are already there)."""
    if not args.resume:
        config = _plain(run_config(args, recipe=recipe))
        config[RESOLVED] = resolved_paths(config)
        run_dir.write_json("config.json", config)


def resolved_paths(config):
    """The real paths of `config`'s file and folder options, recorded next to them when a run starts."""
    return {key: _resolved(config[key]) for key in PATH_OPTIONS if _resolved(config.get(key))}


def _resolved(value):
    """The real path of an option's value when it names an existing file or folder, else None."""
    return os.path.realpath(value) if isinstance(value, str) and value and os.path.exists(value) else None


def same_path(key, value, saved):
    """Whether option `key`'s `value` names the file or folder `saved` (a config with RESOLVED) recorded."""
    if key not in PATH_OPTIONS or _resolved(value) is None:
        return False
    recorded = saved.get(RESOLVED, {}).get(key) or _resolved(saved.get(key))
    return _resolved(value) == recorded


def _plain(config):
    """As `config` reads back from JSON (tuples become lists), to compare like with like."""
    return json.loads(json.dumps(config, default=str))


@contextlib.contextmanager
def keeping_best_on_divergence(run_dir):
    """On `TrainingDiverged`, save the best weights seen as the run's best.keras, then let it end the run.

    The engine already put them back in the model, and kept its last good checkpoint.
    """
    try:
        yield
    except TrainingDiverged as error:
        run_dir.save_model(error.result.model, "best.keras")
        raise
