"""Benchmark: per-image latency of a run's exports (SavedModel, LiteRT float, LiteRT int8), and int8's accuracy drop.

    headstart finetune --name demo                     # the default demo run (or any finished run)
    python scripts/bench_export.py runs/finetune/demo [--formats saved_model,litert,litert-int8] [--calls 300]

Exports the run with `headstart.recipes.export.export` into a temporary folder (each passes
its parity check), loads each artifact with its own runtime (`tf.saved_model.load`, the
LiteRT interpreter of ai-edge-litert, onnxruntime), and times `--calls` calls on one
image each (batch 1, a held-out test image each call, after 20 warm-up calls): the
median and 90th percentile in milliseconds, and the median relative to the SavedModel's.
Each runtime uses its default threads (all cores). Then the accuracy of each artifact on
the whole test split, next to the Keras model's: for int8, the accuracy drop.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from headstart.recipes import export, trained  # noqa: E402

WARM_UP = 20
EXPORTS = {"saved_model": ("saved_model", None), "litert": ("litert", None), "litert-float16": ("litert", "float16"),
           "litert-int8": ("litert", "int8"), "onnx": ("onnx", None)}


def predictor(format, artifact):
    """A function: one uint8 batch -> probabilities, with the artifact loaded by its own runtime."""
    if format == "saved_model":
        serve = tf.saved_model.load(str(artifact)).signatures["serving_default"]
        return lambda images: serve(image=tf.constant(images))["probabilities"].numpy()
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(artifact)).get_signature_runner()
        return lambda images: runner(image=images)["output_0"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def latency(predict, images, calls):
    """(median, 90th percentile) milliseconds of `predict` on one image per call."""
    for index in range(WARM_UP):
        predict(images[index % len(images)][None])
    seconds = []
    for index in range(calls):
        image = images[index % len(images)][None]
        started = time.perf_counter()
        predict(image)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return 1000 * statistics.median(seconds), 1000 * seconds[int(0.9 * (len(seconds) - 1))]


def accuracy(predict, images, labels, batch=64):
    top = np.concatenate([predict(images[start:start + batch]).argmax(1) for start in range(0, len(images), batch)])
    return float(np.mean(top == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder, e.g. runs/finetune/demo")
    parser.add_argument("--formats", default="saved_model,litert,litert-int8",
                        help=f"comma list of {', '.join(EXPORTS)}. Default: saved_model,litert,litert-int8")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per artifact. Default: 300")
    args = parser.parse_args()
    # Each export reloads the run, whose calls retrace on new batch sizes: TensorFlow warns, nothing to act on.
    tf.get_logger().setLevel("ERROR")
    names = args.formats.split(",")
    unknown = [name for name in names if name not in EXPORTS]
    if unknown or args.calls < 10:
        parser.error(f"unknown --formats {unknown}" if unknown else "--calls must be 10 or more")

    model = trained.load(args.run)
    splits = model.splits()
    images, labels = export._arrays(splits.test if splits.test is not None else splits.val)
    keras_accuracy = float(np.mean(model.probabilities(images).argmax(1) == labels))
    print(f"run {args.run}: {model.info.get('backbone')}, {model.input_shape} inputs, {len(labels)} test images; "
          f"Keras accuracy {keras_accuracy:.4f}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            format, quantize = EXPORTS[name]
            started = time.perf_counter()
            result = export.export(args.run, format=format, quantize=quantize, output=Path(folder) / name)
            export_seconds = time.perf_counter() - started
            predict = predictor(format, result["artifact"])
            artifact = Path(result["artifact"])
            size = (sum(file.stat().st_size for file in artifact.rglob("*") if file.is_file()) if artifact.is_dir()
                    else artifact.stat().st_size)
            median, p90 = latency(predict, images, args.calls)
            rows.append((name, size, export_seconds, median, p90, accuracy(predict, images, labels)))
            print(f"  {name}: exported in {export_seconds:.1f} s; {export.parity_line(result['parity'])}", flush=True)
    base_name, base = next(((name, median) for name, _, _, median, _, _ in rows if name == "saved_model"),
                           (rows[0][0], rows[0][3]))
    print(f"\nper-image latency (batch 1, {args.calls} calls), accuracy on the {len(labels)} test images:\n")
    print(f"| export | size (MB) | export (s) | median (ms) | p90 (ms) | median / {base_name}'s | accuracy | drop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, seconds, median, p90, artifact_accuracy in rows:
        print(f"| {name} | {size / 1e6:.2f} | {seconds:.1f} | {median:.3f} | {p90:.3f} | {median / base:.2f} | "
              f"{artifact_accuracy:.4f} | {keras_accuracy - artifact_accuracy:+.4f} |")


if __name__ == "__main__":
    main()
