"""Run a training-dynamics study: one lecture claim, reproduced as a figure and a table.

    headstart study --list                          # the studies and what each shows
    headstart study exploding-products              # about a minute or less on 2 CPU cores
    headstart study initialization --quick --seed 1 # the same code path in a few seconds

Writes `runs/study/NAME/<--name or a timestamp>/`: the study's figures (PNG),
`results.md` (the claim, the table, whether this run showed the claim) and
`findings.json` (the numbers that decide it).
"""

from headstart.recipes import options
from headstart.recipes.errors import UsageError


def add_arguments(parser):
    parser.add_argument("study", nargs="?", metavar="NAME", help="the study to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument("--quick", action="store_true",
                        help="a shrunk setting that runs in seconds (what the tests use)")
    parser.add_argument("--seed", type=int, default=0, help="Default: 0")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the result (no line per configuration trained)")
    options.add_run_arguments(parser)


def validate(args):
    """Every check that needs no TensorFlow work; raises UsageError."""
    from headstart.recipes import studies
    from headstart.recipes.rundir import check_run_name

    if args.study is None:
        raise UsageError(f"name a study to run, or pass --list; known studies: {', '.join(studies.STUDIES)}")
    if args.study not in studies.STUDIES:
        studies.load_study(args.study)  # raises the unknown-study error, with the known names
    options.check_non_negative_int(args.seed, "--seed")
    check_run_name(f"study/{args.study}", args.name, args.runs_dir, args.overwrite)
    # Last: some studies import Keras (and so TensorFlow) at the top of their module, which
    # takes seconds; the checks above must not wait for it. A missing module is a usage error.
    studies.load_study(args.study)


def run(args):
    from headstart.recipes import studies

    if args.list:
        for name in studies.list_studies():
            print(f"{name:<22} {studies.describe_study(name)}")
        return 0
    validate(args)
    options.say(args, f"study {args.study}{' (quick)' if args.quick else ''}: {studies.describe_study(args.study)}")
    run_dir, result = studies.run_study(args.study, quick=args.quick, seed=args.seed, runs_root=args.runs_dir,
                                        run_name=args.name, overwrite=args.overwrite, quiet=args.quiet)
    print(result.summary)
    print(f"claim supported by this run: {'yes' if result.supported else 'no'}")
    print()
    print(result.table.rstrip())
    print()
    print(f"results: {run_dir.path / 'results.md'}")
    return 0
