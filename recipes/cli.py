"""The one command-line mechanism: `headstart VERB ...` (and `python -m headstart VERB ...`).

Each verb is a module in `recipes/` with three things at its top level:
`add_arguments(parser)`, `run(args) -> int` and a docstring whose first line is the
verb's help. Verb modules import TensorFlow only inside `run`, so argument errors are
reported in well under a second.

Bad input is one line on stderr and exit status 2, with no traceback: argparse errors,
and any `UsageError` raised while a verb validates its options. A training whose loss
became NaN is one line too (where, and what to try), with exit status 1, as is an
operating-system error during a run (`headstart.recipes.faults`: the path, the error, what
to do and how to resume). Ctrl-C and SIGTERM stop the verb with one line that gives the
command resuming the run, exit status 130 / 143.
"""

import argparse
import importlib
import importlib.abc
import importlib.machinery
import os
import sys

from headstart.recipes import faults, rundir
from headstart.recipes.errors import TrainingDiverged, UsageError

# Verb name -> module. The order is the order of `headstart --help`.
VERBS = {
    "finetune": "headstart.recipes.finetune",
    "pretrain": "headstart.recipes.pretrain",
    "lr-find": "headstart.recipes.lr_find",
    "tune": "headstart.recipes.tune",
    "semisupervised": "headstart.recipes.semisupervised",
    "evaluate": "headstart.recipes.evaluate",
    "predict": "headstart.recipes.predict",
    "rank-backbones": "headstart.recipes.rank_backbones",
    "list": "headstart.recipes.list_cmd",
    "study": "headstart.recipes.study",
    "export": "headstart.recipes.export",
}

USAGE_EXIT_STATUS = 2
DIVERGED_EXIT_STATUS = 1   # the options were fine; the training was not
OS_ERROR_EXIT_STATUS = 1   # the options were fine; the machine was not


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on error; we print one line instead."""

    def error(self, message):
        if message.endswith("expected one argument"):
            # argparse reads "--weight-decay -1e-4" as two options when the parser has
            # options that look like negative numbers, and says only this.
            message += " (a value starting with '-' is written --option=VALUE)"
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser():
    parser = _OneLineParser(
        prog="headstart",
        description="Keras 3 recipes for transfer learning: fine-tuning, tuner "
        "searches and training-dynamics studies.",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_OneLineParser)
    subparsers.required = True
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        help_line = (module.__doc__ or "").strip().splitlines()[0]
        verb_parser = subparsers.add_parser(verb, help=help_line, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def options_for(verb, *positional, **overrides):
    """A verb's options with its defaults, as the CLI would parse them, plus overrides.

    The Python way to call a recipe: `pretrain.run(options_for("pretrain", epochs=3))`;
    verbs with positional arguments take them after the verb: `options_for("evaluate", "runs/finetune/demo")`.
    Unknown option names raise `UsageError`, as unknown flags do on the command line.
    """
    args = build_parser().parse_args([verb, *map(str, positional)])
    unknown = sorted(set(overrides) - set(vars(args)))
    if unknown:
        raise UsageError(f"unknown option for {verb}: {', '.join(unknown)}")
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# TensorFlow's C++ start-up lines, which no user of a recipe can act on. `TF_CPP_MIN_LOG_LEVEL`
# 3 hides the `cuda_platform.cc ... failed call to cuInit` error (2 hides info and warnings
# only); the absl banner and `cudart_stub.cc` are written before TensorFlow reads that
# variable, so no environment variable reaches them: `_QuietTensorFlowImport` filters them.
TENSORFLOW_LOG_LEVEL = "3"
START_UP_NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                  "To enable the following instructions:")   # the second line of cpu_feature_guard's notice


def is_start_up_noise(line, info=True):
    """One of `START_UP_NOISE` or, with `info`, an info line of TensorFlow's C++ log (`I0000 00:00:...`).

    Warnings and errors (`W...`, `E...`) and Python's own output are kept.
    """
    return line.startswith(START_UP_NOISE) or (info and line[:1] == "I" and line[1:5].isdigit() and line[5:6] == " ")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow`, the first time anything does, with file descriptor 2 sent to a file;
    then writes the file's lines back to stderr, except the start-up noise. Python's own
    warnings and errors of the import (also a failing import's) reach stderr, only later."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)   # once: the import is under way
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _QuietLoader(spec.loader.name, spec.loader.path)
        return spec


class _QuietLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module):
        import tempfile

        sys.stderr.flush()
        with tempfile.TemporaryFile("w+b") as captured:
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                super().exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                # Info lines are what TF_CPP_MIN_LOG_LEVEL 1 and up hides (it does not reach these).
                info = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("", "0")
                kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                        if not is_start_up_noise(line, info)]
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow_start_up(argv):
    """Unless `--verbose` is among `argv`: TensorFlow's start-up messages hidden. Call before TensorFlow is imported.

    A `TF_CPP_MIN_LOG_LEVEL` the user set is theirs.
    """
    # argparse also takes an unambiguous prefix of an option (--verb) for the option.
    if any(arg.startswith("--v") and "--verbose".startswith(arg) for arg in argv) or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TENSORFLOW_LOG_LEVEL)
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_tensorflow_start_up(argv)
    parser = build_parser()
    args = None
    try:
        with faults.handling_signals():
            try:
                args = parser.parse_args(argv)
                return args._run(args) or 0
            except UsageError as error:
                print(f"headstart: error: {error}", file=sys.stderr)
                return USAGE_EXIT_STATUS
            except TrainingDiverged as error:
                print(f"headstart: error: {error}", file=sys.stderr)
                return DIVERGED_EXIT_STATUS
            except OSError as error:
                print(f"headstart: error: {faults.os_error_message(error, argv, rundir.runs_written(), _resumable(args))}",
                      file=sys.stderr)
                return OS_ERROR_EXIT_STATUS
            finally:
                rundir.release_locks()
    except faults.Interrupted as error:
        print(f"headstart: {faults.interrupted_message(error, argv, rundir.runs_written(), _resumable(args))}",
              file=sys.stderr, flush=True)
        return error.exit_status


def _resumable(args):
    """Whether the verb has --resume (the training verbs)."""
    return args is not None and hasattr(args, "resume")


if __name__ == "__main__":
    sys.exit(main())
