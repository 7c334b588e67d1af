"""Evaluate a finished run's model: per-class metrics, confusion matrix, worst predictions, calibration.

    headstart evaluate runs/finetune/demo              # the run's own test split
    headstart evaluate runs/finetune/demo --tta        # also with test-time augmentation
    headstart evaluate runs/finetune/demo --data ./more_images     # every image of another source

Writes RUN/evaluation/ (or --output DIR): metrics.json, report.md, confusion_matrix.png
(rows normalised: each true class's predictions), top_losses.png (the worst-predicted
images) and reliability.png (confidence against accuracy, before and after temperature
scaling). The temperature is the run's own, fitted on its validation split when it
finished (`headstart.recipes.trained`); `predict` and `export` use the same.

From Python: `evaluate.evaluate("runs/finetune/demo", tta=True)` returns metrics.json's content.
"""

import os
import shutil
from pathlib import Path

from headstart.recipes import options, trained
from headstart.recipes.errors import UsageError

SPLITS = ("test", "val", "train", "all")
TOP_K = (3, 5)            # top-k accuracies reported, where k is below the number of classes
CONFUSED_PAIRS = 5        # the most confused (true, predicted) pairs listed
TOP_LOSSES = 16           # images in top_losses.png


def add_arguments(parser):
    parser.add_argument("run", help="a finished run's folder (runs/finetune/NAME), or a .keras file in one")
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=None,
                       help="evaluate on this source instead of the run's own data: 'digits', 'tfds:NAME' or an "
                            "image folder with one sub-folder per class (the run's class names)")
    group.add_argument("--data-dir", default=None, help="where TFDS datasets are stored (with --data tfds:NAME)")
    group.add_argument("--classes", default=None,
                       help="with --data: the classes to evaluate on, a comma list of the run's classes "
                            "(digits also 'source'/'target'). Default: the run's classes, which the source "
                            "must hold exactly")
    group.add_argument("--split", choices=SPLITS, default=None,
                       help="which split: test, val, train, or all of them. Default: test for the run's own "
                            "data (val when it has no test split), all with --data")
    group.add_argument("--batch-size", type=int, default=64, help="Default: 64")
    group = parser.add_argument_group("evaluation")
    group.add_argument("--tta", action="store_true",
                       help="also report test-time augmentation: the mean over each image and its central crop, "
                            "and their mirror images if the run trained with --augment flip")
    group.add_argument("--output", default=None, help="folder to write. Default: RUN/evaluation (replaced)")
    options.add_output_arguments(group)


def validate(args):
    """Everything that can be checked without TensorFlow; returns (run folder, model.json, output folder)."""
    from headstart.recipes import data

    folder, info = trained.locate(args.run)
    options.check_positive_int(args.batch_size, "--batch-size")
    if args.classes is not None and args.data is None:
        raise UsageError("--classes chooses among the classes of --data; the run's own data has the run's classes")
    if args.data is not None:
        data.check_source(args.data, data_dir=args.data_dir)
        check_classes(args.data, args.data_dir, args.classes, info["class_names"])
    output = Path(args.output) if args.output else folder / "evaluation"
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file: pass a folder")
    options.check_writable_folder(output.parent, "--output")
    return folder, info, output


def check_classes(source, data_dir, classes, run_classes):
    """The classes to evaluate `source` on, in the run's output order; refuses classes the model has no output for."""
    from headstart.recipes import data

    source_classes = data.source_class_names(source, data_dir)
    if classes is not None:
        chosen = data.check_source(source, classes=classes, data_dir=data_dir).classes
        unknown = [name for name in chosen if name not in run_classes]
        if unknown:
            raise UsageError(f"--classes {', '.join(unknown)}: the run's model has no output for them; its classes "
                             f"are {', '.join(run_classes)}")
        return [name for name in run_classes if name in chosen]
    if source_classes is None:   # a TFDS dataset not downloaded yet: checked when it is loaded
        return list(run_classes)
    extra = [name for name in source_classes if name not in run_classes]
    missing = [name for name in run_classes if name not in source_classes]
    if extra or missing:
        said = "; ".join(part for part in (f"classes the run's model does not know: {', '.join(extra)}" if extra
                                           else "", f"none of the run's {', '.join(missing)}" if missing else "")
                         if part)
        raise UsageError(f"{source} has other classes than the run ({said}); evaluate on data of the run's classes "
                         f"({', '.join(run_classes)}), or pass --classes to choose some of them")
    return list(run_classes)


def evaluate(run, data=None, split=None, tta=False, output=None, classes=None, data_dir=None, batch_size=64,
             quiet=True):
    """Evaluate a finished run (folder or .keras file); writes the evaluation folder and returns its metrics."""
    from headstart.recipes import cli

    args = cli.options_for("evaluate", run, data=data, split=split, tta=tta, output=output,
                           classes=classes, data_dir=data_dir, batch_size=batch_size, quiet=quiet)
    return _evaluate(args, *validate(args))


def run(args):
    folder, info, output = validate(args)
    metrics = _evaluate(args, folder, info, output)
    print(summary(metrics))
    print(f"\nevaluation: {output}")
    return 0


def _evaluate(args, folder, info, output):
    import numpy as np

    from headstart.recipes import calibration

    options.say(args, f"loading the model of {folder}")
    model = trained.load(folder)
    classes = (check_classes(args.data, args.data_dir, args.classes, model.class_names) if args.data is not None
               else None)
    splits = model.splits(args.data, classes=classes, batch_size=args.batch_size)
    split, batches = chosen_split(splits, args.split or ("all" if args.data is not None else "test"))
    class_names = classes or model.class_names
    # Label i of `splits` is class_names[i]; the model's output j is model.class_names[j].
    to_output = np.array([model.class_names.index(name) for name in class_names])
    temperature, fitted_here = model.temperature, False
    if not model.calibrated:   # a run from before calibration: fit it now, on the run's own validation split
        options.say(args, "fitting a calibration temperature on the run's validation split (the run has none)")
        val = splits.val if args.data is None else model.splits(batch_size=args.batch_size).val
        temperature, fitted_here = calibration.fit_temperature(*trained.network_logits(model.serving, val)), True
    options.say(args, f"evaluating on the {split} split of {args.data or info['data']['source']}"
                      + (" (with test-time augmentation)" if args.tta else ""))
    seen = _predictions(model, batches, to_output, temperature, args.tta)
    if not len(seen["labels"]):
        raise UsageError(f"the {split} split holds no images: choose another --split")
    metrics = {"run": str(folder), "data": args.data or info["data"]["source"], "split": split,
               "examples": int(len(seen["labels"])), "class_names": model.class_names,
               "temperature": temperature, "temperature_fitted_now": fitted_here,
               **classification_metrics(seen["logits"], seen["labels"], len(model.class_names), temperature)}
    if args.tta:
        metrics["tta"] = probability_metrics(seen["tta"], seen["labels"], len(model.class_names))
    write(output, metrics, seen, model.class_names)
    return metrics


def chosen_split(splits, split):
    """(the split's name, its batches); test falls back to val when there is no test split."""
    if split == "test" and splits.test is None:
        split = "val"
    if split == "all":
        from headstart.recipes.data.pipeline import concatenated

        return "all", concatenated([part for part in (splits.train_plain, splits.val, splits.test) if part is not None])
    return split, {"test": splits.test, "val": splits.val, "train": splits.train_plain}[split]


def _predictions(model, batches, to_output, temperature, tta):
    """Logits, labels (as model outputs), TTA probabilities, and the TOP_LOSSES worst images, in one pass."""
    import numpy as np

    from headstart.recipes import calibration

    logits, labels, tta_probabilities = [], [], []
    worst = {"loss": np.zeros(0), "images": None, "labels": np.zeros(0, np.int64), "probabilities": None}
    for images, batch_labels in batches:
        images = images.numpy()
        batch_logits = model.logits(images)
        batch_labels = to_output[batch_labels.numpy()]
        logits.append(batch_logits)
        labels.append(batch_labels)
        if tta:
            tta_probabilities.append(model.probabilities(images, temperature=temperature, tta=True))
        probabilities = calibration.softmax(batch_logits, temperature)
        loss = -np.log(np.maximum(probabilities[np.arange(len(batch_labels)), batch_labels], 1e-12))
        # Keep only the worst images seen so far: memory stays TOP_LOSSES images whatever the split's size.
        candidates = {"loss": np.concatenate([worst["loss"], loss]),
                      "images": images if worst["images"] is None else np.concatenate([worst["images"], images]),
                      "labels": np.concatenate([worst["labels"], batch_labels]),
                      "probabilities": probabilities if worst["probabilities"] is None else
                      np.concatenate([worst["probabilities"], probabilities])}
        keep = np.argsort(-candidates["loss"], kind="stable")[:TOP_LOSSES]
        worst = {key: value[keep] for key, value in candidates.items()}
    return {"logits": np.concatenate(logits) if logits else np.zeros((0, len(model.class_names))),
            "labels": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
            "tta": np.concatenate(tta_probabilities) if tta_probabilities else None, "worst": worst}


def classification_metrics(logits, labels, num_classes, temperature):
    """Everything evaluate reports from logits: plain (temperature 1) and calibrated figures."""
    from headstart.recipes import calibration

    metrics = probability_metrics(calibration.softmax(logits, temperature), labels, num_classes)
    uncalibrated = calibration.softmax(logits)
    metrics["calibration"] = {
        "temperature": temperature,
        "ece_before": calibration.expected_calibration_error(uncalibrated, labels),
        "ece_after": metrics["ece"],
        "log_loss_before": calibration.log_loss(logits, labels),
        "log_loss_after": metrics["log_loss"],
        "bins": calibration.ECE_BINS,
    }
    return metrics


def probability_metrics(probabilities, labels, num_classes):
    """Accuracy, top-k, per-class precision / recall / F1, macro F1, balanced accuracy, log loss, ECE,
    the confusion matrix and the most confused pairs of `probabilities` (n, classes) against `labels`."""
    import numpy as np
    from sklearn import metrics as sk

    from headstart.recipes import calibration

    everything = np.arange(num_classes)
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predicted, labels=everything,
                                                                        zero_division=0)
    matrix = sk.confusion_matrix(labels, predicted, labels=everything)
    pairs = [(int(matrix[true, guess]), int(true), int(guess)) for true in everything for guess in everything
             if true != guess and matrix[true, guess]]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    present = support > 0
    return {
        "accuracy": float(np.mean(predicted == labels)),
        **{f"top_{k}_accuracy": float(sk.top_k_accuracy_score(labels, probabilities, k=k, labels=everything))
           for k in TOP_K if k < num_classes},
        "macro_f1": float(np.mean(f1[present])) if present.any() else 0.0,
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else 0.0,
        "log_loss": float(sk.log_loss(labels, np.clip(probabilities, 1e-12, 1), labels=everything)),
        "ece": calibration.expected_calibration_error(probabilities, labels),
        "per_class": [{"label": int(label), "precision": float(precision[label]), "recall": float(recall[label]),
                       "f1": float(f1[label]), "support": int(support[label])} for label in everything],
        "confusion_matrix": matrix.tolist(),
        "most_confused": [{"true": true, "predicted": guess, "count": count, "share": count / int(support[true])}
                          for count, true, guess in pairs[:CONFUSED_PAIRS]],
    }


def write(output, metrics, seen, class_names):
    """The evaluation folder, written next to `output` and swapped in whole: an old one is replaced only
    once the new one is complete."""
    import json

    from headstart.recipes import calibration, plots
    from headstart.recipes.rundir import RunDir

    building = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    folder = RunDir(building)
    folder.write_json("metrics.json", metrics)
    folder.write_text("report.md", report(metrics))
    folder.save_figure(plots.plot_confusion_matrix(metrics["confusion_matrix"], class_names), "confusion_matrix.png")
    worst = seen["worst"]
    folder.save_figure(plots.plot_top_losses(worst["images"], worst["labels"], worst["probabilities"], class_names),
                       "top_losses.png")
    before = calibration.reliability(calibration.softmax(seen["logits"]), seen["labels"])
    after = calibration.reliability(calibration.softmax(seen["logits"], metrics["temperature"]), seen["labels"])
    folder.save_figure(plots.plot_reliability(before, after, metrics["temperature"]), "reliability.png")
    json.dumps(metrics)   # fails here, before the swap, if anything was not plain data
    if output.exists():
        old = output.with_name(f".{output.name}.{os.getpid()}.old")
        os.replace(output, old)
        os.replace(building, output)
        shutil.rmtree(old)
    else:
        os.replace(building, output)


def report(metrics):
    names = metrics["class_names"]
    calibration = metrics["calibration"]
    lines = [f"# Evaluation of {metrics['run']}", "",
             f"{metrics['examples']} images: the {metrics['split']} split of {metrics['data']}.", "",
             "| metric | value |" + (" with TTA |" if "tta" in metrics else ""),
             "|---|---|" + ("---|" if "tta" in metrics else "")]
    for key in ("accuracy", *(f"top_{k}_accuracy" for k in TOP_K), "balanced_accuracy", "macro_f1", "log_loss",
                "ece"):
        if key in metrics:
            lines.append(f"| {key.replace('_', ' ')} | {metrics[key]:.4f} |"
                         + (f" {metrics['tta'][key]:.4f} |" if "tta" in metrics else ""))
    lines += ["", "## Per class", "", "| class | precision | recall | F1 | images |", "|---|---|---|---|---|"]
    lines += [f"| {names[row['label']]} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
              f"{row['support']} |" for row in metrics["per_class"]]
    lines += ["", "## Most confused", ""]
    lines += [f"- {names[pair['true']]} taken for {names[pair['predicted']]}: {pair['count']} "
              f"image{'s' if pair['count'] != 1 else ''} "
              f"({pair['share']:.0%} of {names[pair['true']]})" for pair in metrics["most_confused"]] or ["- none"]
    lines += ["", "## Calibration", "",
              f"Temperature {calibration['temperature']:.3f} (fitted on the run's validation split). "
              f"Expected calibration error ({calibration['bins']} bins): {calibration['ece_before']:.4f} before, "
              f"{calibration['ece_after']:.4f} after; log loss {calibration['log_loss_before']:.4f} before, "
              f"{calibration['log_loss_after']:.4f} after.", "",
              "![confusion matrix](confusion_matrix.png)", "", "![top losses](top_losses.png)", "",
              "![reliability](reliability.png)", ""]
    return "\n".join(lines)


def summary(metrics):
    """What `headstart evaluate` prints: the headline figures and the most confused pairs."""
    names = metrics["class_names"]
    calibration = metrics["calibration"]
    tta = metrics.get("tta")
    lines = [f"{metrics['split']} split of {metrics['data']}, {metrics['examples']} images:",
             f"  accuracy {metrics['accuracy']:.4f}" + (f" (TTA {tta['accuracy']:.4f})" if tta else "")
             + f", balanced accuracy {metrics['balanced_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
             + "".join(f", top-{k} {metrics[f'top_{k}_accuracy']:.4f}" for k in TOP_K
                       if f"top_{k}_accuracy" in metrics),
             f"  log loss {calibration['log_loss_before']:.4f} -> {calibration['log_loss_after']:.4f}, "
             f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} "
             f"(temperature {calibration['temperature']:.3f})"]
    if metrics["most_confused"]:
        lines.append("  most confused: " + ", ".join(f"{names[pair['true']]} -> {names[pair['predicted']]} "
                                                      f"({pair['count']})" for pair in metrics["most_confused"]))
    return "\n".join(lines)
