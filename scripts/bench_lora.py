"""Benchmark: LoRA vs. full fine-tuning of a small ViT, in one run.

    python scripts/bench_lora.py                 # a few minutes on 2 CPU cores
    python scripts/bench_lora.py --rank 8 --labels-per-class 10

The offline transfer task of `headstart finetune`, on a KerasHub ViT config (random
weights, then pretrained here): the ViT is pretrained on digits 0-4 (all labels) once, then
fine-tuned on digits 5-9 with `--labels-per-class` labels per class, two ways, each in its
own process (so each has its own peak memory) from the same pretrained weights, data and
budgets, through `headstart.recipes.engine.fine_tune`:
- full: the head phase, then the whole backbone and head (`--unfreeze all`);
- lora: the head phase, then the head and LoRA matrices of rank `--rank` on the attention
  query / value projections (`headstart.models.lora`), the rest frozen.

Reported per method: trainable parameters in the second phase, the median time of a
training step of the second phase (`step_times`: both in this process, in rotated rounds on
one fixed batch, first calls dropped), each fine-tuning process's peak resident memory and
its growth while fine-tuning, both phases (`ru_maxrss` against the resident memory before),
the test accuracy reached and the best validation loss; with the LoRA / full ratios. Results and the command go in BENCHMARKS.md.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

VIT = dict(image_shape=(32, 32, 3), patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128)
IMAGE_SIZE = 32
METHODS = ["full", "lora"]


def build(num_classes):
    from headstart.models import heads, hub_backbones

    return heads.attach_head(hub_backbones.build_from_config("ViTBackbone", VIT, IMAGE_SIZE), num_classes,
                             name="vit")


def load(classes, labels_per_class, seed):
    from headstart.recipes import data

    return data.load("digits", classes=classes, labels_per_class=labels_per_class, image_size=IMAGE_SIZE,
                     channels=3, preprocess=lambda images: images / 255.0, seed=seed)


def pretrain(args, path):
    from headstart.recipes import engine

    engine.seed_everything(args.seed)
    splits = load("source", None, args.seed)
    result = engine.train(lambda: build(splits.num_classes), splits, epochs=args.pretrain_epochs,
                          learning_rate=1e-3, options=engine.TrainingOptions(progress="lines", patience=100))
    result.model.get_layer("backbone").save_weights(path)
    return result.accuracy


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def child(args):
    import psutil

    from headstart.models import freezing
    from headstart.recipes import engine

    engine.seed_everything(args.seed)
    splits = load("target", args.labels_per_class, args.seed)
    model = build(splits.num_classes)
    model.get_layer("backbone").load_weights(args.weights)
    use_lora = args.child == "lora"
    if use_lora:
        from headstart.models import lora

        lora.adapt(model.get_layer("backbone"), args.rank, args.alpha)
    rss_before = psutil.Process().memory_info().rss / 2 ** 20
    result = engine.fine_tune(lambda: model, splits, head_steps=args.head_steps, finetune_steps=args.finetune_steps,
                              learning_rate=1e-2, finetune_learning_rate=args.finetune_lr, schedule="cosine",
                              warmup=0.1, lora=use_lora,
                              options=engine.TrainingOptions(progress="quiet", patience=100))
    peak = peak_rss_mb()
    trainable = freezing.trainable_summary(model).trainable_parameters   # as the second phase left it
    print(json.dumps({"trainable": int(trainable), "total": int(model.count_params()), "peak_rss_mb": peak,
                      "rss_growth_mb": peak - rss_before, "accuracy": result.accuracy,
                      "seconds": sum(phase["seconds"] for phase in result.phases[-1:]),
                      # Which phase's weights the run ended with (the best val_loss of both).
                      "best_phase": result.best.get("phase"), "best_val_loss": result.best.get("value"),
                      "head_val_loss": min(row["val_loss"] for row in result.history if row["phase"] == "head")}))


def step_times(args, weights):
    """Median second-phase training step of each method, in this one process: both models
    compiled as the engine compiles them, trained on one fixed batch in rotated rounds (the
    first calls, which trace, dropped), so the machine's changing load falls on both alike."""
    from headstart.models import lora
    from headstart.recipes import engine

    splits = load("target", args.labels_per_class, args.seed)
    images, labels = next(iter(splits.train))
    models = {}
    for method in METHODS:
        model = build(splits.num_classes)
        model.get_layer("backbone").load_weights(weights)
        if method == "lora":
            lora.adapt(model.get_layer("backbone"), args.rank, args.alpha)
            lora.train_adapters(model)
        else:
            engine.train_head_and_backbone(model)
        engine.compile_model(model, learning_rate=args.finetune_lr, weight_decay=1e-4, num_classes=splits.num_classes)
        for _ in range(3):
            model.train_on_batch(images, labels)
        models[method] = model
    times = {method: [] for method in METHODS}
    for round_index in range(args.rounds):
        order = METHODS[round_index % 2:] + METHODS[:round_index % 2]
        for method in order:
            for _ in range(args.timed_steps):
                start = time.perf_counter()
                models[method].train_on_batch(images, labels)
                times[method].append(time.perf_counter() - start)
    return {method: 1000 * statistics.median(values) for method, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=8)
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--head-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--timed-steps", type=int, default=20, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "vit_digits_source.weights.h5")
        started = time.perf_counter()
        source_accuracy = pretrain(args, weights)
        print(f"pretrained the ViT on digits 0-4: test accuracy {source_accuracy:.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        results = {}
        for method in ("full", "lora"):
            command = [sys.executable, __file__, "--child", method, "--weights", weights,
                       *[f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
                         if key not in ("child", "weights")]]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[method] = json.loads(output.strip().splitlines()[-1])
            print(f"{method}: {results[method]}", flush=True)
        for method, value in step_times(args, weights).items():
            results[method]["step_ms"] = value

    full, low = results["full"], results["lora"]
    print(f"\nViT {VIT['num_layers']} layers, hidden {VIT['hidden_dim']}, {IMAGE_SIZE} px, patch {VIT['patch_size']} "
          f"({full['total']:,} parameters); digits 5-9, {args.labels_per_class} labels per class; head "
          f"{args.head_steps} steps, then {args.finetune_steps} steps at {args.finetune_lr}; LoRA rank {args.rank}, "
          f"alpha {args.alpha:g}, query/value\n")
    print("| | full fine-tune | LoRA | LoRA / full |")
    print("|---|---|---|---|")
    rows = [("trainable parameters (phase 2)", "trainable", "{:,}"), ("median training step", "step_ms", "{:.1f} ms"),
            ("peak resident memory", "peak_rss_mb", "{:.0f} MB"),
            ("memory growth while fine-tuning", "rss_growth_mb", "{:.0f} MB"),
            ("test accuracy", "accuracy", "{:.3f}"), ("best val_loss", "best_val_loss", "{:.4f}")]
    for label, key, form in rows:
        ratio = f"{low[key] / full[key]:.3f}x" if full[key] else "-"
        if key == "accuracy":
            ratio = f"{low[key] - full[key]:+.3f}"
        print(f"| {label} | {form.format(full[key])} | {form.format(low[key])} | {ratio} |")
    print(f"| weights kept from phase | {full['best_phase']} | {low['best_phase']} | |")
    print(f"\n(best val_loss of the head phase alone: {full['head_val_loss']:.4f})")


if __name__ == "__main__":
    sys.exit(main())
