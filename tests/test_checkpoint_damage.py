"""Checkpoints that survive damage: the last two saves are kept with checksums, a damaged newest one is
passed over with one line, none intact is refused in one line, and a resumed run's history comes
from the checkpoint (every epoch exactly once, whatever happened to history.csv)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from headstart.callbacks.history_writer import read_history
from headstart.recipes.checkpoint import CheckpointDamaged, TrainingCheckpoint

SAFETY_TIMEOUT = 900   # a hang guard only


def _save(checkpoint, epoch):
    state = {"epoch": epoch, "phase_index": 0, "phase_done": False, "history": [{"epoch": epoch}]}
    checkpoint.save(state, {"model": [np.full(3, float(epoch))], "optimizer": None})


def _truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _garbage(file):
    file.write_bytes(b"\x00garbage" * 10)


# What can happen to the newest save (its folder), and the file it happens to.
DAMAGE = {
    "truncated arrays": lambda folder: _truncate(folder / "arrays.npz"),
    "garbage arrays": lambda folder: _garbage(folder / "arrays.npz"),
    "cut-short state": lambda folder: _truncate(folder / "state.json"),
    "missing arrays": lambda folder: (folder / "arrays.npz").unlink(),
    "missing state": lambda folder: (folder / "state.json").unlink(),
    "garbage checksums": lambda folder: _garbage(folder / "checksums.json"),
    "one bit flipped": lambda folder: (folder / "arrays.npz").write_bytes(
        (lambda data: data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])((folder / "arrays.npz").read_bytes())),
}


def test_the_last_two_saves_are_kept(tmp_path):
    checkpoint = TrainingCheckpoint(tmp_path)
    for epoch in (1, 2, 3):
        _save(checkpoint, epoch)
    assert checkpoint.saves() == ["epoch-00003-running-p0", "epoch-00002-running-p0"]
    assert sorted(os.listdir(tmp_path)) == ["epoch-00002-running-p0", "epoch-00003-running-p0", "latest"]
    state, arrays = checkpoint.load()
    assert state["epoch"] == 3 and arrays["model"][0][0] == 3.0 and checkpoint.skipped == []


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_save_falls_back_to_the_one_before(tmp_path, damage):
    checkpoint = TrainingCheckpoint(tmp_path)
    for epoch in (1, 2):
        _save(checkpoint, epoch)
    DAMAGE[damage](tmp_path / "epoch-00002-running-p0")
    state, arrays = checkpoint.load()
    assert state["epoch"] == 1 and arrays["model"][0][0] == 1.0
    assert [name for name, _ in checkpoint.skipped] == ["epoch-00002-running-p0"]
    _save(checkpoint, 2)   # the resumed run saves epoch 2 again: the damaged one is replaced
    assert checkpoint.load()[0]["epoch"] == 2 and checkpoint.skipped == []
    assert checkpoint.saves() == ["epoch-00002-running-p0", "epoch-00001-running-p0"]


@pytest.mark.parametrize("pointer", ["", "garbage\n", None])
def test_the_latest_pointer_is_not_needed(tmp_path, pointer):
    checkpoint = TrainingCheckpoint(tmp_path)
    for epoch in (1, 2):
        _save(checkpoint, epoch)
    if pointer is None:
        (tmp_path / "latest").unlink()
    else:
        (tmp_path / "latest").write_text(pointer)
    assert checkpoint.load()[0]["epoch"] == 2 and checkpoint.skipped == []


def test_no_intact_save_is_refused_saying_how_to_start_over(tmp_path):
    checkpoint = TrainingCheckpoint(tmp_path)
    for epoch in (1, 2):
        _save(checkpoint, epoch)
    DAMAGE["truncated arrays"](tmp_path / "epoch-00002-running-p0")
    DAMAGE["missing state"](tmp_path / "epoch-00001-running-p0")
    with pytest.raises(CheckpointDamaged, match="no checkpoint in .* is intact .*epoch-00002-running-p0: arrays.npz "
                                                "does not match its checksum; epoch-00001-running-p0: state.json is "
                                                "missing.*--overwrite instead of --resume"):
        checkpoint.load()


def test_a_failing_save_leaves_the_previous_ones_and_no_temporary(tmp_path, monkeypatch):
    import errno

    checkpoint = TrainingCheckpoint(tmp_path)
    for epoch in (1, 2):
        _save(checkpoint, epoch)

    def disk_full(handle, **arrays):
        handle.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "arrays.npz"))

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(checkpoint, 3)
    assert sorted(os.listdir(tmp_path)) == ["epoch-00001-running-p0", "epoch-00002-running-p0", "latest"]
    assert checkpoint.load()[0]["epoch"] == 2


# ## A real run: killed with two saves, its newest damaged and history.csv gone, resumed.

def _command(name, runs_dir, *extra):
    return [sys.executable, "-m", "headstart", "pretrain", "--image-size", "8", "--epochs", "4", "--batch-size", "64",
            "--deterministic", "--seed", "3", "--name", name, "--runs-dir", str(runs_dir), *extra]


def _env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_a_killed_run_with_a_damaged_newest_checkpoint_and_no_history_resumes_with_every_epoch_once(tmp_path):
    runs_dir = tmp_path / "runs"
    run = runs_dir / "pretrain" / "damaged"
    checkpoint = TrainingCheckpoint(run / "checkpoint")
    process = subprocess.Popen(_command("damaged", runs_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=_env())
    try:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while len(checkpoint.saves()) < 2:   # a rename is atomic: a listed save is complete
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    newest, older = checkpoint.saves()[:2]
    DAMAGE["truncated arrays"](checkpoint.folder / newest)
    (run / "history.csv").unlink()
    continued_from = int(older.split("-")[1])

    resumed = subprocess.run(_command("damaged", runs_dir, "--resume"), capture_output=True, text=True, env=_env(),
                             timeout=SAFETY_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("headstart: warning:")]
    assert warnings == [f"headstart: warning: the newest checkpoint is damaged: {newest} (arrays.npz does not match "
                        f"its checksum); continuing from the one before it, after epoch {continued_from}"]
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [0, 1, 2, 3]
    assert (run / "metrics.json").exists()


def test_resume_with_no_intact_checkpoint_is_refused_before_any_work(tmp_path):
    from headstart.recipes import pretrain, resume
    from headstart.recipes.cli import options_for
    from headstart.recipes.rundir import RunDir

    runs_dir = tmp_path / "runs"
    started = options_for("pretrain", image_size=8, epochs=3, name="a", runs_dir=str(runs_dir))
    pretrain.validate(started)
    run_dir = RunDir.create("pretrain", "a", str(runs_dir))
    resume.start(run_dir, started, "pretrain")
    checkpoint = TrainingCheckpoint(run_dir.file("checkpoint"))
    _save(checkpoint, 1)
    DAMAGE["garbage arrays"](checkpoint.folder / "epoch-00001-running-p0")
    from headstart.recipes import rundir

    rundir.release_locks()   # as the process that made the run would have, ending
    command = [sys.executable, "-c", "import sys, headstart.recipes.cli as cli; status = cli.main(sys.argv[1:]); "
               "print('TF' if 'tensorflow' in sys.modules else 'noTF'); sys.exit(status)",
               "pretrain", "--image-size", "8", "--epochs", "3", "--name", "a", "--runs-dir", str(runs_dir), "--resume"]
    refused = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=SAFETY_TIMEOUT)
    assert refused.returncode == 2 and refused.stdout == "noTF\n"
    assert len(refused.stderr.splitlines()) == 1
    assert "no checkpoint in" in refused.stderr and "--overwrite instead of --resume" in refused.stderr
