"""The one command-line mechanism: `headstart VERB ...` (and `python -m headstart VERB ...`).

Each verb is a module in `recipes/` with three things at its top level:
`add_arguments(parser)`, `run(args) -> int` and a docstring whose first line is the
verb's help. Verb modules import TensorFlow only inside `run`, so argument errors are
reported in well under a second.

Bad input is one line on stderr and exit status 2, with no traceback: argparse errors,
and any `UsageError` raised while a verb validates its options. A training whose loss
became NaN is one line too (where, and what to try), with exit status 1.
"""

import argparse
import importlib
import sys

from headstart.recipes.errors import TrainingDiverged, UsageError

# Verb name -> module. The order is the order of `headstart --help`.
VERBS = {
    "finetune": "headstart.recipes.finetune",
    "pretrain": "headstart.recipes.pretrain",
    "lr-find": "headstart.recipes.lr_find",
    "tune": "headstart.recipes.tune",
    "semisupervised": "headstart.recipes.semisupervised",
    "list": "headstart.recipes.list_cmd",
    "study": "headstart.recipes.study",
}

USAGE_EXIT_STATUS = 2
DIVERGED_EXIT_STATUS = 1   # the options were fine; the training was not


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


def options_for(verb, **overrides):
    """A verb's options with its defaults, as the CLI would parse them, plus overrides.

    The Python way to call a recipe: `pretrain.run(options_for("pretrain", epochs=3))`.
    Unknown option names raise `UsageError`, as unknown flags do on the command line.
    """
    args = build_parser().parse_args([verb])
    unknown = sorted(set(overrides) - set(vars(args)))
    if unknown:
        raise UsageError(f"unknown option for {verb}: {', '.join(unknown)}")
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args._run(args) or 0
    except UsageError as error:
        print(f"headstart: error: {error}", file=sys.stderr)
        return USAGE_EXIT_STATUS
    except TrainingDiverged as error:
        print(f"headstart: error: {error}", file=sys.stderr)
        return DIVERGED_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
