"""The one run-directory writer: `runs/<recipe>/<name>/` with config, history, metrics, model, plots.

Every file is written to a temporary file in the same folder and renamed into place,
so an interrupted run never leaves a half-written file for a later run or tool.

In a multi-worker cluster (`TF_CONFIG`, `--strategy multiworker`) every worker runs the
same recipe, but only the chief writes the run folder. The others write the same files
into a private temporary folder that is deleted when the process exits (the Keras
multi-worker guide's pattern), so recipes and callbacks need no special cases and the
workers never race on one file.

A run being written is locked (`RunLock`): one process trains, resumes or overwrites it at
a time, and a second one is refused in one line naming the first.
"""

import atexit
import csv
import errno
import fcntl
import io
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from headstart.callbacks.atomic import atomic_write_bytes, atomic_write_text
from headstart.recipes.distribution import cluster_role
from headstart.recipes.errors import UsageError

DEFAULT_ROOT = "runs"

_worker_folder = None  # this process's private folder when it is a non-chief worker
_held_locks = {}       # lock file -> RunLock, the locks this process holds
_runs_written = []     # the run folders this process created or resumed, newest last


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


class RunInUse(UsageError):
    """Another live process holds the run's lock."""


class RunLock:
    """The lock on a run folder: held by the one process that writes it, released when it ends.

    The lock is an `flock` on a file beside the run (`runs/<recipe>/.<name>.lock`, so that
    `--overwrite` can replace the folder while holding it); the kernel releases it when its
    process dies, however it dies, so a lock left by a killed process is free for the next
    one, which takes it over. The file holds the holder's pid, host, start time and command,
    for the refusal's message.

    `shared=True` takes the run's lock shared: several processes of one distributed search
    (a keras-tuner chief and its workers) write one folder by design, each also holding its
    own `part` lock exclusively (two chiefs, or two workers with one id, are refused), while
    any process that wants the run to itself (a standalone search, `--overwrite`) is refused.
    """

    def __init__(self, run, part=None):
        run = Path(run)
        self.run, self.part = run, part
        self.file = run.parent / f".{run.name}{'.' + part if part else ''}.lock"
        self.descriptor, self.shared, self.taken_over = None, False, None

    def holder(self, shared=False):
        """The record of a live process that holds the lock (a dict), or None when we could take it."""
        if os.path.abspath(self.file) in _held_locks:
            return None   # this process holds it (the Python API running recipes one after another)
        try:
            descriptor = os.open(self.file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            return None   # the folder's own checks report it
        try:
            if _try_flock(descriptor, shared):
                return None   # free: no record, or one a killed process left
            return _read_record(descriptor) or {}
        finally:
            os.close(descriptor)   # also releases the lock the test took

    def acquire(self, shared=False):
        """Take the lock, or raise `RunInUse` naming its holder; returns self."""
        key = os.path.abspath(self.file)
        if key in _held_locks:
            return _held_locks[key]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            if not _try_flock(descriptor, shared):
                record = _read_record(descriptor) or {}
                os.close(descriptor)
                raise RunInUse(in_use_message(self.run, record))
            # Its holder may have removed the file between our open and our lock (see `release`):
            # a lock on a removed file locks nothing, so start again on the file that is there.
            try:
                if os.stat(self.file).st_ino == os.fstat(descriptor).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(descriptor)
        self.descriptor, self.shared = descriptor, shared
        # What a killed holder left, if anything (shared: the record may be a live co-holder's).
        self.taken_over = None if shared else _read_record(descriptor)
        if not shared or not _read_record(descriptor):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(_own_record(self.part)).encode(), 0)
        _held_locks[key] = self
        return self

    def release(self):
        """Let go of the lock; the file goes too when no one else holds it."""
        if self.descriptor is None:
            return
        # Removed while still locked, so a process that opened it meanwhile sees (in `acquire`)
        # that its lock is on a removed file. Shared: only by the last holder.
        if not self.shared or _try_flock(self.descriptor, shared=False):
            try:
                os.unlink(self.file)
            except OSError:
                pass
        os.close(self.descriptor)
        self.descriptor = None
        _held_locks.pop(os.path.abspath(self.file), None)


def release_locks():
    """Release every run lock this process holds (the CLI calls it as a verb ends)."""
    for lock in list(_held_locks.values()):
        lock.release()


atexit.register(release_locks)


def in_use_message(run, record):
    who = f"process {record.get('pid', '?')} on {record.get('host', '?')}"
    since = f" since {record['started']}" if record.get("started") else ""
    command = f" (`{record['command']}`)" if record.get("command") else ""
    return (f"run {run} is in use by {who}{since}{command}: wait for it to end or stop it, "
            "or choose another --name")


def _try_flock(descriptor, shared):
    """Take an flock without waiting: True, or False when another process holds it."""
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            # A file system without locks (some network ones): the record decides, by the holder's pid.
            record = _read_record(descriptor)
            return not record or not _alive(record)
        raise


def _alive(record):
    if record.get("host") != socket.gethostname():
        return True   # another machine's process: we cannot tell, so it holds the run
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, KeyError, ValueError):
        return True
    return True


def _read_record(descriptor):
    try:
        text = os.pread(descriptor, 65536, 0).decode(errors="replace")
        return json.loads(text) if text.strip() else None
    except ValueError:
        return {}   # half-written by a killed process: a holder we cannot name


def _own_record(part):
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join(["headstart", *sys.argv[1:]]), **({"part": part} if part else {})}


def check_not_in_use(path, shared=False):
    """Refuse (exit 2, nothing written) a run another live process is writing."""
    record = RunLock(path).holder(shared)
    if record is not None:
        raise RunInUse(in_use_message(path, record))


def runs_written():
    """The run folders this process created or resumed (the CLI's interruption line names the last)."""
    return list(_runs_written)


def check_run_name(recipe, name, root=DEFAULT_ROOT, overwrite=False, resume=False, shared=False):
    """Validate a run name before any work: refuse an existing run unless `overwrite` or `resume`.

    `resume` asks for the opposite: the run must exist (and is continued, not replaced).
    On a non-chief worker of a multi-worker cluster the path returned is in its private
    `worker_folder()`: what exists under `root` is the chief's to check.
    A run another process is writing is refused (`RunLock`); `shared`: unless it is the
    shared lock of a distributed search this process joins.
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
    check_not_in_use(path, shared)
    from headstart.recipes.options import check_writable_folder  # options imports this module

    if not resume:
        check_writable_folder(path.parent, "--runs-dir")
    if resume:
        try:
            found = path.is_dir()
        except OSError as error:   # a name too long
            raise UsageError(f"--name {name!r}: the file system refuses {path} ({error.strerror})")
        if not found:
            raise UsageError(f"--resume: there is no run {path} to continue; run without --resume to start it")
        return path
    _check_name_accepted(path)
    if path.exists() and not overwrite:
        raise UsageError(f"run {path} already exists: choose another --name, or pass --overwrite to replace it")
    return path


def _check_name_accepted(path):
    """The file system takes the run's folder and lock-file names (length, characters): tried in the nearest
    existing parent with a folder made and removed, since each file system has its own limits."""
    try:
        if path.exists():
            return
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
    except OSError as error:
        raise UsageError(f"--name {path.name!r}: the file system refuses {path} ({error.strerror}); "
                         "choose a shorter --name or another --runs-dir")
    if not parent.is_dir():
        return   # the --runs-dir check says so
    for name in (path.name, f".{path.name}.lock"):
        try:
            os.mkdir(parent / name)
            os.rmdir(parent / name)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
                return   # about the folder, not the name: the --runs-dir check says so
            raise UsageError(f"--name {path.name!r}: the file system refuses the name {name!r} in {parent} "
                             f"({error.strerror}); choose a shorter --name or other characters")


class RunDir:
    """A run's output folder. Create it with `RunDir.create` after the options are validated."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, recipe, name=None, root=DEFAULT_ROOT, overwrite=False, resume=False):
        """The run's folder, new (replacing an old one with `overwrite`), or the existing one with `resume`.

        The chief (or only) process holds the run's lock from here until it ends.
        """
        path = check_run_name(recipe, name, root, overwrite, resume)
        if cluster_role().is_chief:
            lock = RunLock(path).acquire()
            if lock.taken_over:
                print(f"headstart: note: {path} was locked by process {lock.taken_over.get('pid', '?')}, which "
                      "is no longer running; this process takes it over", file=sys.stderr, flush=True)
            _runs_written.append(path)
            if resume:
                return cls(path)
        if path.exists():
            shutil.rmtree(path)
        if resume:  # a non-chief worker: a copy of the chief's run, to continue from the same epoch
            shutil.copytree(run_path(recipe, name, root), path)
        else:
            path.mkdir(parents=True)
        return cls(path)

    @classmethod
    def join(cls, recipe, name, root, part, resume=False):
        """A folder several processes write by design (a distributed search): the run's lock shared,
        the lock of `part` (this process's role in it) exclusive. Made if missing."""
        path = run_path(recipe, name, root)
        RunLock(path).acquire(shared=True)
        RunLock(path, part).acquire()
        path.mkdir(parents=True, exist_ok=True)
        _runs_written.append(path)
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
        try:
            model.save(temporary)
            os.replace(temporary, target)
        except BaseException:   # a full disk, a signal: no half-written temporary left behind
            temporary.unlink(missing_ok=True)
            raise
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
