"""Atomic file writes: readers see the old file or the new one, never half of either.

A run can be interrupted at any moment (Ctrl-C, a killed job, a full disk); files that are
rewritten while it runs (history, metrics, configs) go through these helpers so that an
interruption leaves the previous complete version in place.

    from headstart.callbacks.atomic import atomic_write_text
    atomic_write_text("runs/cifar/history.csv", "epoch,loss\n0,1.25\n")
"""

import os
import uuid


def atomic_write_bytes(path, data):
    """Replace the file at `path` with `data` in one step.

    The bytes go to a temporary file in the same directory (so the final rename never crosses
    file systems), are flushed to disk, and the temporary file is renamed over `path` with
    `os.replace`, which is atomic on POSIX and Windows. The directory must exist.

    Args:
        path: Destination file, a `str` or `os.PathLike`.
        data: The complete new contents, `bytes`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 rather than tempfile.mkstemp: mkstemp creates mode 0600 files, and
    # the replaced file should get the same permissions as any file the user creates.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Without fsync a power cut after the rename can leave an empty file behind.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Replace the file at `path` with `text`, atomically (see `atomic_write_bytes`).

    Args:
        path: Destination file, a `str` or `os.PathLike`.
        text: The complete new contents, `str`. Written as is: no newline translation.
        encoding: Text encoding. Defaults to `"utf-8"`.
    """
    atomic_write_bytes(path, text.encode(encoding))
