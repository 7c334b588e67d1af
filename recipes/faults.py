"""Faults during a run, in the one place the verbs share (the CLI): signals and the operating system's errors.

**Signals.** `handling_signals()` turns SIGINT (Ctrl-C) and SIGTERM into `Interrupted`, raised
at once: every file of a run is written to a temporary name and renamed (the temporary
removed if the write is interrupted), so stopping anywhere leaves the last complete version.
The exception is a `saving()` block (a checkpoint: several files, then the removal of the
older ones), where the signal is held until the block ends. A second signal exits at once,
even there: the checkpoint being written is a temporary folder, only renamed into place
when complete, so the previous one is intact. The CLI prints one line with the command that
resumes the run and exits 130 (SIGINT) or 143 (SIGTERM), as shells report such a stop.

**Operating-system errors.** A full disk, a permission, a read-only file system, a name
too long, an I/O error: `os_error_message` says in one line which path, what the system
said, what to do, and how to resume (the last complete checkpoint is kept).
"""

import contextlib
import errno
import os
import shlex
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_saving = 0          # depth of `saving()` blocks
_pending = None      # a signal received inside one, raised when it ends
_received = False    # a first signal was received: the next one exits at once


class Interrupted(BaseException):
    """SIGINT or SIGTERM. A `BaseException`, as `KeyboardInterrupt` is, so that `except Exception`
    in a library (keras-tuner's trial loop) does not take it for a failed trial."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self):
        return 128 + self.signum   # 130 for SIGINT, 143 for SIGTERM: what a shell reports


def _handler(signum, frame):
    global _pending, _received
    if _received:
        os.write(2, f"headstart: {signal.Signals(signum).name} again: stopped at once; the last complete "
                    "checkpoint is kept\n".encode())
        os._exit(128 + signum)
    _received = True
    if _saving:
        _pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handling_signals():
    """SIGINT and SIGTERM raise `Interrupted` inside the block (main thread only: Python's rule)."""
    global _pending, _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending, _received = None, False


@contextlib.contextmanager
def saving():
    """A block a signal does not interrupt: the signal is raised as `Interrupted` when it ends."""
    global _saving, _pending
    _saving += 1
    try:
        yield
    finally:
        _saving -= 1
    if not _saving and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


def resume_command(argv, run, resumable=True):
    """The command line that continues `run`, from the `argv` that started it: `--resume` in place
    of `--overwrite`, and the `--name` it got when none was given."""
    words = [word for word in argv if not (len(word) > 3 and "--overwrite".startswith(word))
             and word not in ("--resume", "--no-resume")]
    if not any(word == "--name" or word.startswith("--name=") for word in words):
        words += ["--name", run.name]
    return shlex.join(["headstart", *words, *(["--resume"] if resumable else ["--overwrite"])])


def interrupted_message(error, argv, runs, resumable):
    """The one line for `Interrupted` (no "error:": the user asked for it)."""
    name = signal.Signals(error.signum).name
    if not runs:
        return f"stopped by {name} before any run folder was written"
    if not resumable:
        return f"stopped by {name}: {runs[-1]} is incomplete; start it again with `{resume_command(argv, runs[-1], False)}`"
    return (f"stopped by {name}; the last completed epoch's checkpoint in {runs[-1]} is kept: continue with "
            f"`{resume_command(argv, runs[-1])}`")


# What to do about each error, by errno.
ADVICE = {
    errno.ENOSPC: "free some space there (or choose another --runs-dir)",
    errno.EDQUOT: "free some space there: the disk quota is used up",
    errno.EACCES: "give yourself access to it, or choose another folder",
    errno.EPERM: "give yourself access to it, or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENAMETOOLONG: "choose a shorter --name or folder",
    errno.EIO: "the disk reported an I/O error: check it, or choose another folder",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def os_error_message(error, argv, runs, resumable):
    """The one line for an `OSError` during a run: the path, what the system said, what to do, how to go on."""
    path = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    what = error.strerror or str(error)
    if error.errno is not None and error.errno in errno.errorcode:
        what += f" ({errno.errorcode[error.errno]})"
    line = f"{path + ': ' if path else ''}{what}"
    advice = ADVICE.get(error.errno)
    if advice:
        line += f": {advice}"
    if runs and resumable:
        line += (f"; the last completed epoch's checkpoint in {runs[-1]} is kept: then continue with "
                 f"`{resume_command(argv, runs[-1])}`")
    elif runs:
        line += f"; {runs[-1]} is incomplete: then start it again with `{resume_command(argv, runs[-1], False)}`"
    return line
