"""The engine's resume checkpoint: everything needed to continue a run after a SIGKILL.

After every completed epoch the engine saves, in one folder per save:

    state.json      where the run is (phase, epochs done), the early-stopping state, the
                    history and phase summaries so far, the best value seen
    arrays.npz      the model's weights and random-seed states, the optimizer's state (moments, step count),
                    the phase's best weights held by early stopping, the run's best weights
    checksums.json  the SHA-256 of the two files above

Keras' `BackupAndRestore` saves the model and optimizer of one `fit`; a fine-tune is
several `fit` calls with recompiles in between and best weights kept across them, so the
engine needs this bigger state. Each save is written to a temporary folder, renamed into
place, and only then named in `latest` (itself replaced atomically), so a kill at any
moment leaves the previous complete checkpoint in use.

A file can still be damaged afterwards (a disk error, a copy cut short, a hand that
edited it), so the last two complete saves are kept, and `load` verifies each against its
checksums, newest first: it continues from the newest good one and says which it skipped.
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from headstart.callbacks.atomic import atomic_write_text
from headstart.recipes import faults
from headstart.recipes.errors import UsageError

LATEST = "latest"
CHECKSUMS = "checksums.json"
FILES = ("state.json", "arrays.npz")
ARRAY_GROUPS = ("model", "seeds", "optimizer", "phase_best", "run_best")
KEEP = 2   # complete saves kept: the newest, and one to fall back to when it is damaged
# A save's folder name, which orders saves: epochs done, then the phase, then running < done.
NAME = re.compile(r"^epoch-(\d+)-(running|done)-p(\d+)$")


class CheckpointDamaged(UsageError):
    """Every checkpoint of a folder is damaged; the message says which and how to start over."""


class TrainingCheckpoint:
    """A folder of per-epoch saves; `load()` returns the newest intact one or None."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.skipped = []   # (save, why) of the damaged saves `load` passed over, newest first

    def exists(self):
        return bool(self.saves())

    def saves(self):
        """The names of the complete saves in the folder (renamed into place), newest first."""
        if not self.folder.is_dir():
            return []
        found = [(match.group(1), match.group(3), match.group(2)) for match in map(NAME.match, os.listdir(self.folder))
                 if match and (self.folder / match.group(0)).is_dir()]
        return [f"epoch-{epoch}-{done}-p{phase}" for epoch, phase, done in
                sorted(found, key=lambda key: (int(key[0]), int(key[1]), key[2] == "done"), reverse=True)]

    def save(self, state, arrays):
        """Save `state` (JSON-ready) and `arrays` ({group: list of arrays or None}) as the newest checkpoint.

        A signal is held until the save is complete (`faults.saving`); a save that fails (a full
        disk) leaves no temporary folder behind, and the previous saves as they were.
        """
        with faults.saving():
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{state['epoch']:05d}-{'done' if state.get('phase_done') else 'running'}-p{state['phase_index']}"
            temporary = self.folder / f".{name}.{os.getpid()}.tmp"
            try:
                self._write(temporary, state, arrays)
                target = self.folder / name
                if target.exists():
                    shutil.rmtree(target)
                os.replace(temporary, target)
            except BaseException as error:
                shutil.rmtree(temporary, ignore_errors=True)
                if isinstance(error, OSError) and error.filename is None:
                    error.filename = str(self.folder)   # a failed write() names no file: the user needs the place
                raise
            atomic_write_text(self.folder / LATEST, name + "\n")
            # The new save and the newest one before it that is not known to be damaged.
            skipped = {damaged for damaged, _ in self.skipped}
            keep = [name, *[old for old in self.saves() if old != name and old not in skipped][:KEEP - 1]]
            for old in self.folder.iterdir():   # older saves, and temporary folders of killed saves
                if old.is_dir() and old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _write(temporary, state, arrays):
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
        flat = {}
        for group in ARRAY_GROUPS:
            values = arrays.get(group)
            state.setdefault("arrays", {})[group] = None if values is None else len(values)
            for index, value in enumerate(values or ()):
                flat[f"{group}_{index}"] = np.asarray(value)
        with open(temporary / "arrays.npz", "wb") as handle:
            np.savez(handle, **flat)
            handle.flush()
            os.fsync(handle.fileno())
        atomic_write_text(temporary / "state.json", json.dumps(state, indent=1, default=_plain))
        checksums = {file: _sha256(temporary / file) for file in FILES}
        atomic_write_text(temporary / CHECKSUMS, json.dumps(checksums, indent=1) + "\n")

    def load(self):
        """The newest intact checkpoint as (state, {group: list of arrays or None}), or None when there is none.

        Damaged saves are passed over (listed in `skipped`); when every save is damaged,
        raises `CheckpointDamaged`.
        """
        self.skipped = []
        for name in self.saves():
            try:
                return self._read(self.folder / name)
            except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
                self.skipped.append((name, _why(error)))
        if self.skipped:
            raise CheckpointDamaged(
                f"no checkpoint in {self.folder} is intact ({'; '.join(f'{name}: {why}' for name, why in self.skipped)}), "
                "so the run cannot be continued: start it again with --overwrite instead of --resume")
        return None

    def check(self):
        """`load` without keeping what it read: raises `CheckpointDamaged` when no save is intact;
        returns the save it would continue from (None: no save) and `skipped`."""
        loaded = self.load()
        return (None if loaded is None else loaded[0]), self.skipped

    @staticmethod
    def _read(folder):
        checksums_file = folder / CHECKSUMS
        if checksums_file.exists():   # saves from before checksums have none: the reading itself checks them
            checksums = json.loads(checksums_file.read_text())
            for file in FILES:
                if not (folder / file).is_file():
                    raise ValueError(f"{file} is missing")
                if _sha256(folder / file) != checksums.get(file):
                    raise ValueError(f"{file} does not match its checksum")
        state = json.loads((folder / "state.json").read_text())
        with np.load(folder / "arrays.npz") as stored:
            arrays = {group: None if count is None else [stored[f"{group}_{index}"] for index in range(count)]
                      for group, count in state["arrays"].items()}
        return state, arrays

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def checkpoint_folders(run):
    """The folders under `run` that hold checkpoint saves (a run may have several: finetune's
    scratch comparison, semisupervised's trainings)."""
    return sorted({folder.parent for folder in Path(run).rglob("epoch-*") if folder.is_dir() and NAME.match(folder.name)})


def resume_note(checkpoint, state):
    """The line saying which damaged saves a resume passed over and where it continues, or None."""
    if not checkpoint.skipped:
        return None
    skipped = "; ".join(f"{name} ({why})" for name, why in checkpoint.skipped)
    return (f"the newest checkpoint is damaged: {skipped}; continuing from the one before it, "
            f"after epoch {state['epoch']}")


def _why(error):
    if isinstance(error, FileNotFoundError):
        return f"{Path(error.filename).name} is missing"
    if isinstance(error, json.JSONDecodeError):
        return f"unreadable JSON ({error.msg})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def optimizer_variables(optimizer):
    """The optimizer's state variables, including those of an optimizer it wraps (`LayerRateOptimizer`)."""
    variables = list(optimizer.variables)
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        variables += [variable for variable in inner.variables if all(variable is not v for v in variables)]
    return variables


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
