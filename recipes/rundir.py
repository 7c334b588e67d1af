"""The one run-directory writer: `runs/<recipe>/<name>/` with config, history, metrics, model, plots.

Every file is written to a temporary file in the same folder and renamed into place,
so an interrupted run never leaves a half-written file for a later run or tool.

In a multi-worker cluster (`TF_CONFIG`, `--strategy multiworker`) every worker runs the
same recipe, but only the chief writes the run folder. The others write the same files
into a private temporary folder that is deleted when the process exits (the Keras
multi-worker guide's pattern), so recipes and callbacks need no special cases and the
workers never race on one file.
"""

import atexit
import csv
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from headstart.callbacks.atomic import atomic_write_bytes, atomic_write_text
from headstart.recipes.distribution import cluster_role
from headstart.recipes.errors import UsageError

DEFAULT_ROOT = "runs"

_worker_folder = None  # this process's private folder when it is a non-chief worker


def run_path(recipe, name, root=DEFAULT_ROOT):
    return Path(root) / recipe / name


def default_run_name():
    return time.strftime("%Y%m%d-%H%M%S")


def worker_folder():
    """A non-chief worker's private folder for its copies of run folders, removed at exit."""
    global _worker_folder
    if _worker_folder is None:
        role = cluster_role()
        _worker_folder = Path(tempfile.mkdtemp(prefix=f"headstart-{role.task_type}{role.index}-"))
        atexit.register(shutil.rmtree, _worker_folder, ignore_errors=True)
    return _worker_folder


def check_run_name(recipe, name, root=DEFAULT_ROOT, overwrite=False, resume=False):
    """Validate a run name before any work: refuse an existing run unless `overwrite` or `resume`.

    `resume` asks for the opposite: the run must exist (and is continued, not replaced).
    On a non-chief worker of a multi-worker cluster the path returned is in its private
    `worker_folder()`: what exists under `root` is the chief's to check.
    """
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise UsageError(f"--name {name!r} is not a usable folder name: use letters, digits, '-' or '_'")
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: pass one of them")
    if resume and name is None:
        raise UsageError("--resume needs the --name of the run to continue")
    name = name or default_run_name()
    path = run_path(recipe, name, root)
    if not cluster_role().is_chief:
        if resume and not path.is_dir():
            raise UsageError(f"--resume on a non-chief worker: the chief's run {path} is not visible here; "
                             "workers resume from the chief's run, so --runs-dir must be a folder they share")
        return run_path(recipe, name, worker_folder())
    if resume:
        if not path.is_dir():
            raise UsageError(f"--resume: there is no run {path} to continue; run without --resume to start it")
        return path
    if path.exists() and not overwrite:
        raise UsageError(f"run {path} already exists: choose another --name, or pass --overwrite to replace it")
    from headstart.recipes.options import check_writable_folder  # options imports this module

    check_writable_folder(path.parent, "--runs-dir")
    return path


class RunDir:
    """A run's output folder. Create it with `RunDir.create` after the options are validated."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, recipe, name=None, root=DEFAULT_ROOT, overwrite=False, resume=False):
        """The run's folder, new (replacing an old one with `overwrite`), or the existing one with `resume`."""
        path = check_run_name(recipe, name, root, overwrite, resume)
        if resume and cluster_role().is_chief:
            return cls(path)
        if path.exists():
            shutil.rmtree(path)
        if resume:  # a non-chief worker: a copy of the chief's run, to continue from the same epoch
            shutil.copytree(run_path(recipe, name, root), path)
        else:
            path.mkdir(parents=True)
        return cls(path)

    def file(self, relative):
        return self.path / relative

    def write_json(self, relative, data):
        atomic_write_text(self.file(relative), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def write_text(self, relative, text):
        atomic_write_text(self.file(relative), text)

    def write_csv(self, relative, rows):
        """Write a list of dicts as CSV; columns are the union of keys, in first-seen order."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.file(relative), buffer.getvalue())

    def save_model(self, model, relative="best.keras"):
        """Save a `.keras` model atomically (Keras needs the `.keras` suffix on the temp name too)."""
        target = self.file(relative)
        temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp.keras")
        model.save(temporary)
        os.replace(temporary, target)
        return target

    def save_figure(self, figure, relative):
        """Write a matplotlib figure as PNG, then close it (pyplot keeps open figures alive)."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(self.file(relative), buffer.getvalue())
        plt.close(figure)


def run_config(args, **extra):
    """A verb's resolved options as the `config.json` of its run (argparse internals left out)."""
    return {**{key: value for key, value in vars(args).items() if not key.startswith("_")}, **extra}


def write_training_outputs(run_dir, config, result, extra_metrics=None, model_info=None, val=None):
    """What every training recipe leaves behind: config, best model, history plot, metrics (last: the run is complete).

    With `model_info` (`headstart.recipes.trained.describe`) also the run's complete model,
    `model.keras` and `model.json`, calibrated on `val` (see `headstart.recipes.trained`).
    The per-epoch history.csv is already there: `HistoryWriter` wrote it after every epoch.
    """
    from headstart.recipes import trained
    from headstart.recipes.plots import plot_history  # matplotlib only when a run finishes

    run_dir.write_json("config.json", config)
    run_dir.save_model(result.model, "best.keras")
    if model_info is not None:
        trained.write(run_dir, result.model, model_info, val)
    figure = plot_history(result.history, result.phases)
    run_dir.save_figure(figure, "history.png")
    run_dir.write_json("metrics.json", {**result.metrics, "best": result.best, "phases": result.phases,
                                         **(extra_metrics or {})})
