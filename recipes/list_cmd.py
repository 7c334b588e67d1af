"""List what is available: models (and, as recipes grow, backbones and datasets).

    headstart list models
"""

WHAT = ("models",)


def add_arguments(parser):
    parser.add_argument("what", choices=WHAT, help="what to list")


def run(args):
    if args.what == "models":
        import models

        for name in models.list_models():
            print(f"{name:<20} {models.describe_model(name)}")
    return 0
