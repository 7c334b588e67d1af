"""List what is available: models, backbones or datasets.

    headstart list models       the project's own builders, by registry name
    headstart list backbones    keras.applications families and the project's own, with input sizes; the KerasHub families
    headstart list datasets     the data sources `--data` accepts
"""

WHAT = ("models", "backbones", "datasets")


def add_arguments(parser):
    parser.add_argument("what", choices=WHAT, help="what to list")


def run(args):
    if args.what == "models":
        from headstart import models

        for name in models.list_models():
            print(f"{name:<20} {models.describe_model(name)}")
    elif args.what == "backbones":
        from headstart.models import backbone_specs as backbones   # the registry: no Keras needed

        print(f"{'name':<22} {'family':<20} {'min px':>6} {'default px':>10}")
        for name in backbones.list_backbones():
            spec = backbones.get_spec(name)
            print(f"{name:<22} {spec.family:<20} {spec.min_size:>6} {spec.default_size:>10}")
        from headstart.models import hub_presets   # KerasHub's preset tables, read without importing it

        print("\nKerasHub presets (--backbone hub:PRESET --weights preset, or hub:/path/to/preset):")
        print(f"{'hub family':<22} {'kind':<20} {'presets':>6}")
        for family, kind, count in hub_presets.families():
            print(f"{family:<22} {kind:<20} {count:>6}")
    else:
        from headstart.recipes import data

        for name, description in data.list_datasets():
            print(f"{name:<28} {description}")
    return 0
