"""Operating-system errors: during a run, one line (the path, the error, what to do, how to resume), exit 1,
the last complete checkpoint intact and no temporary file left; the run resumes once the disk has room."""

import os
import shutil
import subprocess
import sys

import pytest

from headstart.callbacks.history_writer import read_history
from headstart.recipes.checkpoint import TrainingCheckpoint

SAFETY_TIMEOUT = 900   # a hang guard only
# One checkpoint of this run is ~1.3 MB and two are kept: on a 2 MB disk the first fits and the second does not.
TMPFS_SIZE = "2000k"


def _env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _arguments(runs_dir, *extra):
    return ["pretrain", "--image-size", "8", "--epochs", "3", "--batch-size", "64", "--name", "full",
            "--runs-dir", str(runs_dir), *extra]


def _can_mount_tmpfs(folder):
    if shutil.which("unshare") is None:
        return False
    tried = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {folder}"], capture_output=True)
    return tried.returncode == 0


def _fill_a_small_disk(tmp_path):
    """The run on a 2 MB tmpfs of its own mount namespace; its folder is copied out before the namespace
    ends. (status, stderr, where the run was)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    command = " ".join(map(lambda word: "'" + word + "'", [sys.executable, "-m", "headstart", *_arguments(disk / "runs")]))
    script = (f"mount -t tmpfs -o size={TMPFS_SIZE} tmpfs '{disk}' && {{ {command} 2> '{tmp_path}/stderr'; "
              f"echo $? > '{tmp_path}/status'; cp -a '{disk}/runs' '{tmp_path}/runs'; }}")
    subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], env=_env(), timeout=SAFETY_TIMEOUT,
                   check=True)
    return int((tmp_path / "status").read_text()), (tmp_path / "stderr").read_text(), disk / "runs"


# The same fault without a mount (where mounting is not allowed): the second checkpoint save's arrays fail
# with ENOSPC, as numpy does on a full disk.
INJECTED = """
import errno, sys
import numpy as np
from headstart.recipes import cli
saves, savez = [], np.savez
def savez_on_a_disk_with_room_for_one(handle, **arrays):
    saves.append(1)
    if len(saves) == 2:
        handle.write(b"PK half an archive")
        raise OSError(errno.ENOSPC, "No space left on device", handle.name)
    return savez(handle, **arrays)
np.savez = savez_on_a_disk_with_room_for_one
sys.exit(cli.main(sys.argv[1:]))
"""


def _inject_a_full_disk(tmp_path):
    runs_dir = tmp_path / "runs"
    finished = subprocess.run([sys.executable, "-c", INJECTED, *_arguments(runs_dir)], capture_output=True, text=True,
                              env=_env(), timeout=SAFETY_TIMEOUT)
    return finished.returncode, finished.stderr, runs_dir


def test_a_full_disk_during_a_save_is_one_line_and_the_run_resumes(tmp_path):
    mounted = _can_mount_tmpfs(tmp_path)
    status, stderr, where = (_fill_a_small_disk if mounted else _inject_a_full_disk)(tmp_path)
    run = tmp_path / "runs" / "pretrain" / "full"
    assert status == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith(f"headstart: error: {where / 'pretrain' / 'full' / 'checkpoint'}"), line
    assert "No space left on device (ENOSPC): free some space there (or choose another --runs-dir)" in line
    assert line.endswith(f"; the last completed epoch's checkpoint in {where / 'pretrain' / 'full'} is kept: then "
                         f"continue with `headstart {' '.join(_arguments(where, '--resume'))}`"), line
    assert [path.name for path in run.rglob("*") if "tmp" in path.name] == [], "a temporary file was left behind"
    assert TrainingCheckpoint(run / "checkpoint").load()[0]["epoch"] == 1   # the save before the full disk
    assert not (run.parent / ".full.lock").exists()   # released as the process ended

    resumed = subprocess.run([sys.executable, "-m", "headstart", *_arguments(tmp_path / "runs", "--resume")],
                             capture_output=True, text=True, env=_env(), timeout=SAFETY_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [0, 1, 2]


@pytest.mark.parametrize("option", ["--runs-dir", "--cache-dir"])
def test_a_folder_that_only_looks_writable_is_refused_before_work(tmp_path, option):
    """/proc passes `os.access(W_OK)` for root, and takes no file: the probe file finds out."""
    from headstart.recipes.errors import UsageError
    from headstart.recipes.options import check_writable_folder

    with pytest.raises(UsageError, match=f"{option} /proc/headstart: cannot write there"):
        check_writable_folder("/proc/headstart", option)
    assert check_writable_folder(tmp_path / "new" / "folder", option) == tmp_path / "new" / "folder"
    assert os.listdir(tmp_path) == []   # the probe file is gone
