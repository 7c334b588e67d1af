"""Rank candidate backbones for your data before fine-tuning any: linear probe, k-NN and LogME on frozen features.

    headstart rank-backbones                    # offline: resnet8 pretrained on digits 0-4 vs. random weights
    headstart rank-backbones --data ./flowers --backbones mobilenet_v2,efficientnet_b0,resnet50 --image-size 160

Each candidate is BACKBONE or BACKBONE:WEIGHTS (weights as `finetune --weights` takes them:
'imagenet', 'none', 'digits-source' or a .keras file; default 'imagenet' for keras.applications
backbones, 'digits-source' for the project's own). For each, the training, validation and
test images go through the frozen backbone once (pooled features, as the results tables'
linear probe sees them), then three scores, each timed:

- linear probe: logistic regression, C chosen on the validation split (the same probe as
  `finetune`'s baselines); the ranking's key;
- k-NN: the validation and test accuracy of k nearest neighbours (cosine, standardised
  features) among the training images;
- LogME (You et al. 2021): the evidence of a Bayesian linear model of the training
  labels, no validation split needed (`headstart.recipes.transferability`).

Writes runs/rank-backbones/<name>/: ranking.md, ranking.json, ranking.png.
"""

from headstart.models import hub_presets
from headstart.recipes import options
from headstart.recipes.errors import UsageError

BACKBONES = "resnet8:digits-source,resnet8:none"
DATA = "digits"
DIGITS_PRESETS = {"classes": "target", "labels_per_class": 5}   # the fine-tuning demo's task
NEIGHBOURS = 5
# The recommendation compares the best probe with a logistic regression on the pixels: features
# that do not beat the pixels by this much (validation accuracy) are not worth freezing.
USEFUL_MARGIN = 0.02


def add_arguments(parser):
    parser.add_argument("--backbones", default=BACKBONES,
                        help=f"comma list of BACKBONE or BACKBONE:WEIGHTS. Default: {BACKBONES}")
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=DATA, help="'digits', 'tfds:NAME[:CONFIG]' or an image folder. "
                                                    f"Default: {DATA}")
    group.add_argument("--data-dir", default=None, help="TFDS data directory")
    group.add_argument("--classes", default=None,
                       help="classes to keep (comma list, 'all'; digits: 'source'/'target'). Default: all "
                            "(with --data digits: target)")
    group.add_argument("--labels-per-class", type=options.labels_per_class_value, default=None,
                       help="labelled training images per class, or 'all'. Default: all (with --data digits: 5)")
    group.add_argument("--image-size", type=int, default=None,
                       help="side of the square input images. Default: each backbone's default size")
    group.add_argument("--batch-size", type=int, default=32, help="Default: 32")
    group.add_argument("--seed", type=int, default=0, help="the split and the few-labels sample. Default: 0")
    group = parser.add_argument_group("scores")
    group.add_argument("--neighbours", type=int, default=NEIGHBOURS, help=f"k of k-NN. Default: {NEIGHBOURS}")
    group.add_argument("--pretrain-epochs", type=int, default=20,
                       help="with digits-source weights: epochs of the one-time pretraining. Default: 20")
    options.add_run_arguments(parser)
    options.add_output_arguments(parser.add_argument_group("output"))


def candidates(text):
    """[(backbone, weights)] from 'a,b:WEIGHTS'; weights None for the backbone's default."""
    parsed = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        if hub_presets.is_hub_name(item):   # hub:NAME or hub:NAME:WEIGHTS: the name is after "hub:"
            name, _, weights = item[len(hub_presets.PREFIX):].partition(":")
            backbone = hub_presets.PREFIX + name
        else:
            backbone, _, weights = item.partition(":")
        parsed.append((backbone, weights or None))
    if not parsed:
        raise UsageError(f"--backbones needs at least one backbone, e.g. resnet8:digits-source,resnet8:none; "
                         f"got {text!r}")
    if len(set(parsed)) < len(parsed):
        raise UsageError(f"--backbones names a candidate twice: {text!r}")
    return parsed


def candidate_args(args, backbone, weights):
    """finetune's options for one candidate: its data loading, weights resolution and checks are finetune's."""
    from headstart.models import backbone_specs
    from headstart.recipes import cli

    if weights is None:
        family = backbone_specs.get_spec(backbone).family
        weights = {backbone_specs.OWN: "digits-source", backbone_specs.HUB: backbone_specs.PRESET}.get(family, "imagenet")
    return cli.options_for("finetune", backbone=backbone, weights=weights, data=args.data, data_dir=args.data_dir,
                           classes=args.classes, labels_per_class=args.labels_per_class, image_size=args.image_size,
                           batch_size=args.batch_size, seed=args.seed, pretrain_epochs=args.pretrain_epochs,
                           runs_dir=args.runs_dir, augment="none", quiet=args.quiet, verbose=args.verbose,
                           baselines=False, compare_scratch=False)


def validate(args):
    """Every check before any data is read or anything written; returns the candidates' finetune options."""
    from headstart.models import backbone_specs
    from headstart.recipes import finetune
    from headstart.recipes.rundir import check_run_name

    options.resolve_digits_presets(args, DIGITS_PRESETS)
    options.check_positive_int(args.neighbours, "--neighbours")
    parsed = candidates(args.backbones)
    for backbone, _ in parsed:
        if hub_presets.is_hub_name(backbone):
            backbone_specs.get_spec(backbone)   # the preset found, or one line saying why not
        elif backbone not in backbone_specs.list_backbones():
            raise UsageError(f"--backbones: unknown backbone {backbone!r}; see `headstart list backbones`")
    per_candidate = []
    for backbone, weights in parsed:
        candidate = candidate_args(args, backbone, weights)
        finetune.validate(candidate)   # weights, sizes and data, as finetune checks them
        per_candidate.append(candidate)
    check_run_name("rank-backbones", args.name, args.runs_dir, args.overwrite)
    return per_candidate


def rank(args, per_candidate):
    """Score every candidate; returns (run_dir, rows best first, the pixel baseline)."""
    import time

    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from headstart.recipes import baselines, finetune, transferability
    from headstart.recipes.rundir import RunDir, run_config

    rows, pixels = [], None
    for candidate in per_candidate:
        label = f"{candidate.backbone}:{candidate.weights}"
        options.say(args, f"{label}: features of every split through the frozen backbone")
        model, splits, _ = finetune.model_and_data(candidate)
        started = time.perf_counter()
        split_arrays = baselines.arrays(splits)
        extractor = baselines.feature_extractor(model)
        features = {split: (extractor.predict(images, batch_size=baselines.FEATURE_BATCH_SIZE, verbose=0), labels)
                    for split, (images, labels) in split_arrays.items()}
        feature_seconds = time.perf_counter() - started
        if pixels is None:   # the images are the same for every candidate of one size; the first one's decide
            pixels = baselines.run(splits)["pixels"]
        probe = baselines.run_probe(features, args.seed)
        started = time.perf_counter()
        scaler = StandardScaler().fit(features["train"][0])
        neighbours = KNeighborsClassifier(min(args.neighbours, len(features["train"][1])), metric="cosine").fit(
            scaler.transform(features["train"][0]), features["train"][1])
        knn = {f"knn_{split}_accuracy": float(neighbours.score(scaler.transform(inputs), labels))
               for split, (inputs, labels) in features.items() if split != "train"}
        knn_seconds = time.perf_counter() - started
        started = time.perf_counter()
        evidence = transferability.logme(*features["train"])
        rows.append({"candidate": label, "backbone": candidate.backbone, "weights": candidate.weights,
                     "image_size": candidate.image_size, "feature_dim": int(features["train"][0].shape[1]),
                     "probe_val_accuracy": probe["val_accuracy"], "probe_accuracy": probe["accuracy"],
                     "probe_split": probe["split"], "probe_C": probe["C"], **knn, "logme": evidence,
                     "seconds": {"features": round(feature_seconds, 2), "probe": probe["seconds"],
                                 "knn": round(knn_seconds, 3), "logme": round(time.perf_counter() - started, 3)}})
        options.say(args, f"{label}: probe val accuracy {probe['val_accuracy']:.3f}, k-NN val accuracy "
                          f"{knn.get('knn_val_accuracy', float('nan')):.3f}, LogME {evidence:.3f}")
    # Best first: the probe's validation accuracy, ties broken by LogME.
    rows.sort(key=lambda row: (-row["probe_val_accuracy"], -row["logme"]))
    run_dir = RunDir.create("rank-backbones", args.name, args.runs_dir, args.overwrite)
    run_dir.write_json("config.json", run_config(args, recipe="rank-backbones"))
    advice = recommendation(rows, pixels)
    run_dir.write_text("ranking.md", table(rows, pixels) + "\n\n" + advice + "\n")
    run_dir.save_figure(plot_ranking(rows), "ranking.png")
    run_dir.write_json("ranking.json", {"ranking": rows, "pixels": pixels, "recommendation": advice})
    return run_dir, rows, pixels


def recommendation(rows, pixels):
    """The best candidate and how to fine-tune it, from how far its features beat the pixels."""
    best = rows[0]
    command = f"headstart finetune --backbone {best['backbone']} --weights {best['weights']}"
    if best["probe_val_accuracy"] >= pixels["val_accuracy"] + USEFUL_MARGIN:
        return (f"Recommended: {best['candidate']}. Its frozen features beat a logistic regression on the pixels "
                f"(validation accuracy {best['probe_val_accuracy']:.3f} vs {pixels['val_accuracy']:.3f}): train the "
                f"head on them first, then unfreeze all at a 10x lower rate (the default recipe): `{command}`.")
    return (f"Recommended: {best['candidate']}, with care: no candidate's frozen features beat a logistic regression "
            f"on the pixels by {USEFUL_MARGIN} (best {best['probe_val_accuracy']:.3f} vs {pixels['val_accuracy']:.3f} "
            f"validation accuracy), so freezing them buys little: fine-tune everything (`{command} --unfreeze all`) "
            "and compare with training from scratch (`--compare-scratch`).")


def table(rows, pixels):
    split = rows[0]["probe_split"]
    lines = [f"| rank | backbone:weights | probe val acc | probe {split} acc | k-NN val acc | k-NN {split} acc | LogME "
             "| seconds (features + scores) |", "|---|---|---|---|---|---|---|---|"]
    for rank_, row in enumerate(rows, 1):
        seconds = row["seconds"]
        lines.append(f"| {rank_} | {row['candidate']} | {row['probe_val_accuracy']:.3f} | {row['probe_accuracy']:.3f} | "
                     f"{row.get('knn_val_accuracy', float('nan')):.3f} | "
                     f"{row.get(f'knn_{split}_accuracy', float('nan')):.3f} | {row['logme']:.3f} | "
                     f"{seconds['features']:.1f} + {seconds['probe'] + seconds['knn'] + seconds['logme']:.1f} |")
    lines.append(f"| | logistic regression on the pixels | {pixels['val_accuracy']:.3f} | {pixels['accuracy']:.3f} "
                 "| | | | |")
    return "\n".join(lines)


def plot_ranking(rows):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 0.5 * len(rows) + 2))
    names = [row["candidate"] for row in rows][::-1]
    axes[0].barh(names, [row["probe_val_accuracy"] for row in rows][::-1], label="linear probe")
    axes[0].scatter([row.get("knn_val_accuracy", float("nan")) for row in rows][::-1], names, color="black",
                    zorder=3, label="k-NN")
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("validation accuracy")
    axes[0].legend(fontsize=8)
    axes[1].barh(names, [row["logme"] for row in rows][::-1], color="tab:green")
    axes[1].set_xlabel("LogME (higher is better)")
    axes[1].set_yticks([])
    figure.tight_layout()
    return figure


def run(args):
    per_candidate = validate(args)
    run_dir, rows, pixels = rank(args, per_candidate)
    options.say(args, "")
    print(table(rows, pixels))
    print()
    print(recommendation(rows, pixels))
    print(f"\nrun directory: {run_dir.path}")
    return 0
