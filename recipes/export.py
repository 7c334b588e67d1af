"""Export a finished run's model for serving (SavedModel, LiteRT or ONNX), checked against Keras.

    headstart export runs/finetune/demo --format saved_model
    headstart export runs/finetune/demo --format litert --quantize int8
    headstart export runs/finetune/demo --format onnx --min-accuracy 0.8

The artifact is the run's whole model: it takes uint8 images (batch, height, width,
channels) at the run's size, values 0-255 as files hold them, preprocesses them itself
and returns calibrated class probabilities, softmax(logits / T) with the temperature the
run fitted. The SavedModel also has a `serve_bytes` signature on a batch of encoded
JPEG / PNG / BMP / GIF files of any size, decoded and resized as training images were.

Parity check: once written, the artifact is loaded with its own runtime
(`tf.saved_model.load`, the LiteRT interpreter of `ai-edge-litert`, `onnxruntime`) and
run on up to 256 held-out images (test split, else validation); its probabilities must
match the Keras model's within the format's tolerance on every probability (SavedModel
5e-5, LiteRT and ONNX float32 1e-4, LiteRT float16 3e-2; int8: the Keras model's top class
on 90% of the images, near-ties not counted, with the accuracy drop reported). On a
mismatch, a converter error, or `--min-accuracy` not met, nothing is exported (exit status 1).

Writes RUN/export/<format>[-<quantize>]/ (or --output): the artifact (`saved_model/`,
`model.tflite` or `model.onnx`), labels.txt (one class name per line, in output order)
and model_card.md (data, backbone, recipe, metrics, calibration, parity, date).
LiteRT and ONNX need `pip install "headstart[export]"`.
"""

import contextlib
import datetime
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from headstart.recipes import options, trained
from headstart.recipes.errors import UsageError

FORMATS = ("saved_model", "litert", "onnx")
# What each format's converter can do here. Keras' LiteRT export hands converter options to
# TensorFlow's TFLite converter (float16 weights; int8 with a representative set);
# SavedModel and Keras' ONNX export (tf2onnx) write float32 only.
QUANTIZATIONS = {"saved_model": (), "litert": ("float16", "int8"), "onnx": ()}
ARTIFACTS = {"saved_model": "saved_model", "litert": "model.tflite", "onnx": "model.onnx"}
# The packages each format needs beyond TensorFlow and Keras: its converter and its runtime
# (the parity check loads the artifact with it). All in the `export` extra.
REQUIRED_MODULES = {"saved_model": (), "litert": ("ai_edge_litert",), "onnx": ("tf2onnx", "onnx", "onnxruntime")}
LABELS_FILE = "labels.txt"
CARD_FILE = "model_card.md"
SAVED_MODEL_BYTES_SIGNATURE = "serve_bytes"

PARITY_IMAGES = 256        # held-out images the artifact is checked on: enough to see a mismatch, still fast
PARITY_BATCH = 32
BYTES_PARITY_IMAGES = 32   # of those, PNG-encoded through the SavedModel's bytes signature
# int8 calibration: TensorFlow's guide suggests ~100-500 representative samples; more costs
# conversion time for little change in the ranges found.
REPRESENTATIVE_IMAGES = 200

# Largest |artifact - Keras| allowed on any probability, per format and quantization, set
# from what three runs gave on their 179 test images (BENCHMARKS.md): a tiny one (resnet8,
# 8 px, random init), the default demo (resnet8, 32 px, test accuracy 0.94, temperature
# 0.44, which sharpens and so magnifies differences) and mobilenet_v2 (32 px, random init,
# keras.applications preprocessing). Each is ~10-100x the largest difference seen and still
# well below what a wrong artifact gives (classes permuted, a wrong temperature or
# preprocessing: 1e-2 and up, see tests/test_export.py).
TOLERANCES = {
    # The same TensorFlow kernels, only fused and ordered differently by the graph
    # optimizer: measured 4.1e-8, 7.8e-7 (demo), 1.7e-8.
    ("saved_model", None): 5e-5,
    # LiteRT's XNNPACK and ONNX Runtime's own kernels: float32 rounding in another summation
    # order; measured 5.0e-8 / 4.6e-8, 1.7e-6 / 1.2e-6 (demo), 9.1e-9 / 9.1e-9.
    ("litert", None): 1e-4,
    ("onnx", None): 1e-4,
    # Weights rounded to float16 (11 significant bits), computed in float32: measured
    # 4.2e-5, 3.4e-3 (demo), 6.3e-7.
    ("litert", "float16"): 3e-2,
}
# int8 moves probabilities by up to a tenth (8-bit activations; the output itself is
# quantized in steps of 1/256), so no abs tolerance would both pass it and catch a wrong
# artifact: it must give the Keras model's top class on this share of the images, near-ties
# not counted (Keras' top two within INT8_TIE, which an int8 output cannot tell apart).
# Measured: top-1 agreement 0.92 counting ties, 1.00 without (tiny; max abs difference
# 0.011); 0.994 and 1.00 (demo; 0.11, accuracy 0.9385 -> 0.9441); 1.00 (mobilenet_v2; 0.0012).
INT8_MIN_AGREEMENT = 0.9
INT8_TIE = 2 / 256
GATE_EXIT_STATUS = 1       # a refusal of a well-formed request (parity, --min-accuracy): not bad input


class ExportRefused(RuntimeError):
    """The export was refused (parity mismatch, `--min-accuracy` not met, converter error); nothing was written."""


def add_arguments(parser):
    parser.add_argument("run", nargs="?", default=None,
                        help="a finished run folder (e.g. runs/finetune/demo) or a .keras file in one")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="saved_model (TensorFlow Serving, TF.js converters), litert (mobile, edge: "
                             ".tflite) or onnx (ONNX Runtime)")
    parser.add_argument("--quantize", choices=("float16", "int8"), default=None,
                        help="litert only: float16 weights (half the size), or int8 weights and activations, "
                             f"calibrated on {REPRESENTATIVE_IMAGES} training images. Default: float32")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="where to write. Default: RUN/export/<format>[-<quantize>]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument("--min-accuracy", type=float, default=None, metavar="X",
                        help="refuse (exit status 1) a model whose accuracy on the test split (validation if "
                             "none) is below X, in [0, 1]. Default: no gate")
    options.add_output_arguments(parser)


def validate(args):
    """Every check that needs no TensorFlow; returns (run folder, model.json's content, output folder)."""
    if args.run is None:
        raise UsageError("give the run to export: headstart export RUN --format saved_model|litert|onnx")
    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.quantize is not None and args.quantize not in QUANTIZATIONS[args.format]:
        can = QUANTIZATIONS[args.format]
        raise UsageError(f"--quantize {args.quantize}: {args.format} "
                         + (f"takes only {' or '.join(can)}" if can else "is exported in float32 only")
                         + "; --format litert takes float16 or int8")
    if args.min_accuracy is not None and not (math.isfinite(args.min_accuracy) and 0 <= args.min_accuracy <= 1):
        raise UsageError(f"--min-accuracy is an accuracy, in [0, 1] (e.g. 0.9), got {args.min_accuracy}")
    options.progress(args)   # --quiet with --verbose
    missing = [name for name in REQUIRED_MODULES[args.format] if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--format {args.format} needs {', '.join(missing)}: pip install \"headstart[export]\"")
    folder, info = trained.locate(args.run)
    output = Path(args.output) if args.output else default_output(folder, args.format, args.quantize)
    if output.exists() and not args.overwrite:
        raise UsageError(f"{output} exists: pass --overwrite to replace it, or --output another folder")
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file: give a folder")
    options.check_writable_folder(output.parent, "--output")
    return folder, info, output


def default_output(folder, format, quantize=None):
    return Path(folder) / "export" / (format + (f"-{quantize}" if quantize else ""))


def run(args):
    folder, _, output = validate(args)
    try:
        result = export_run(trained.load(folder), args.format, args.quantize, output, args.min_accuracy,
                            overwrite=args.overwrite, args=args)
    except ExportRefused as error:
        print(f"headstart: error: {error}", file=sys.stderr)
        return GATE_EXIT_STATUS
    options.say(args, f"exported to {result['output']}")
    if getattr(args, "quiet", False):   # the one result line
        print(result["output"])
    return 0


def export(run, format="saved_model", quantize=None, output=None, min_accuracy=None, overwrite=False, quiet=True):
    """The Python API: export the run folder (or .keras file) `run`; returns the result dict.

    Raises UsageError for bad input and ExportRefused when the export is refused.
    """
    from headstart.recipes import cli

    args = cli.options_for("export", run=str(run), format=format, quantize=quantize,
                           output=None if output is None else str(output), min_accuracy=min_accuracy,
                           overwrite=overwrite, quiet=quiet)
    folder, _, output = validate(args)
    return export_run(trained.load(folder), format, quantize, output, min_accuracy, overwrite=overwrite, args=args)


def export_run(model, format, quantize, output, min_accuracy=None, overwrite=False, args=None):
    """Export the loaded `TrainedModel` `model` to the folder `output` (see the module docstring)."""
    import numpy as np

    splits = model.splits()
    split = "test" if splits.test is not None else "val"
    images, labels = _arrays(getattr(splits, split))
    accuracy = float(np.mean(model.probabilities(images).argmax(1) == labels)) if len(labels) else None
    if min_accuracy is not None and accuracy is not None and accuracy < min_accuracy:
        raise ExportRefused(f"accuracy {_figure(accuracy)} on the {split} split ({len(labels)} images) is below "
                            f"--min-accuracy {min_accuracy:g}: not exported")
    if not len(labels):   # a check on no images would pass anything
        raise ExportRefused(f"the run's {split} split has no images to check the artifact on: not exported")
    held_out = (images[:PARITY_IMAGES], labels[:PARITY_IMAGES], split)
    verbose = getattr(args, "verbose", False)
    with _staging(output, overwrite) as staging:
        artifact = staging / ARTIFACTS[format]
        _convert(format, quantize, model, artifact, splits, verbose)
        (staging / LABELS_FILE).write_text("".join(f"{name}\n" for name in model.class_names), encoding="utf-8")
        parity = check_parity(format, quantize, artifact, model, *held_out, verbose=verbose)
        if not parity["passed"]:
            raise ExportRefused(f"parity check failed: {parity_line(parity)}; not exported")
        if args is not None:
            options.say(args, parity_line(parity))
        (staging / CARD_FILE).write_text(model_card(model, format, quantize, parity, split, accuracy, len(labels),
                                                    artifact), encoding="utf-8")
    return {"output": str(output), "artifact": str(output / ARTIFACTS[format]), "format": format,
            "quantize": quantize, "labels": model.class_names, "accuracy": accuracy, "split": split,
            "parity": parity}


def _arrays(batches):
    """(uint8 images, int labels) of a split's batches: the artifacts take uint8 images."""
    import numpy as np

    images, labels = [], []
    for batch_images, batch_labels in batches:
        # The pipeline's raw images are whole numbers 0-255 held as float32 (rounded when resized).
        images.append(np.asarray(batch_images).round().clip(0, 255).astype(np.uint8))
        labels.append(np.asarray(batch_labels))
    if not images:
        return np.zeros((0, *batches.element_spec[0].shape[1:]), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _figure(value):
    return "n/a" if value is None else f"{value:.4f}"


@contextlib.contextmanager
def _staging(output, overwrite):
    """A temporary sibling folder of `output` to write into; renamed to `output` if the block succeeds.

    On any failure the temporary folder, and any parent folder made for it, are removed:
    nothing is left behind. An existing `output` (`overwrite`) is replaced only on success.
    """
    output = Path(output)
    made = [parent for parent in (output.parent, *output.parent.parents) if not parent.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        if output.exists() and overwrite:
            os.replace(output, old)
        os.replace(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not output.exists():   # the earlier export back in place
            os.replace(old, output)
        for parent in made:   # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


@contextlib.contextmanager
def _quiet_native(verbose):
    """The converters' and runtimes' C++ log lines (file descriptor 2) hidden, unless `verbose`.

    They say what the converter did ("fully_quantize: 0 ...", "Created TensorFlow Lite
    XNNPACK delegate"), nothing a user can act on; on an error they are written out after all.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+b") as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))


def artifact_model(model):
    """The Keras model each format is converted from: uint8 images -> calibrated probabilities."""
    from headstart.models.serving import probability_model

    return probability_model(model.serving, model.temperature, input_dtype="uint8")


def _convert(format, quantize, model, path, splits, verbose):
    """Write `model`'s artifact at `path` through Keras' export; a converter error -> ExportRefused."""
    import warnings

    keras_model = artifact_model(model)
    try:
        with _quiet_native(verbose), warnings.catch_warnings():
            if not verbose:   # Keras' tf2onnx patch warns about NumPy 2 (np.object): nothing to act on
                warnings.simplefilter("ignore", FutureWarning)
            if format == "saved_model":
                _write_saved_model(keras_model, path, model)
            else:
                keras_model.export(str(path), format=format, verbose=False, input_signature=[_image_spec(model)],
                                   **(_litert_options(quantize, splits) if format == "litert" else {}))
    except Exception as error:   # the converters raise many kinds; the user needs the message
        message = " ".join(str(error).split())[:300]
        raise ExportRefused(f"the {format} converter failed ({type(error).__name__}: {message}); not exported "
                            "(--verbose shows its log)") from error


def _image_spec(model):
    import tensorflow as tf

    return tf.TensorSpec((None, *model.input_shape), tf.uint8, name="image")


def _write_saved_model(keras_model, path, model):
    """A SavedModel with `serve` (the default signature: uint8 images) and `serve_bytes` (encoded files)."""
    import keras
    import tensorflow as tf

    from headstart.recipes.data.pipeline import image_from_bytes

    def serve(images):
        return {"probabilities": keras_model(images, training=False)}

    def serve_bytes(encoded):
        images = tf.map_fn(lambda item: image_from_bytes(item, model.image_size, model.channels), encoded,
                           fn_output_signature=tf.TensorSpec(model.input_shape, tf.uint8))
        return serve(images)

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint("serve", serve, input_signature=[_image_spec(model)])   # first: also serving_default
    archive.add_endpoint(SAVED_MODEL_BYTES_SIGNATURE, serve_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    archive.write_out(str(path), verbose=False)


def _litert_options(quantize, splits):
    """TFLite converter options for `quantize` (Keras passes them through)."""
    import numpy as np
    import tensorflow as tf

    if quantize is None:
        return {}
    if quantize == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
    representative, _ = _arrays(splits.train_plain.take(math.ceil(REPRESENTATIVE_IMAGES / splits.spec.batch_size)))
    representative = representative[:REPRESENTATIVE_IMAGES]

    def samples():   # one image at a time, as the converter's calibration expects
        for image in representative:
            yield [np.expand_dims(image, 0)]

    # Integer kernels wherever an op has one, float for any other (TensorFlow's "full integer
    # quantization with float fallback"): any backbone converts. Input stays uint8 images,
    # output float probabilities, as the other formats.
    return {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": samples}


# ## The parity check

def check_parity(format, quantize, artifact, model, images, labels, split, verbose=False):
    """The artifact at `artifact`, run by its own runtime on `images`, against the Keras model.

    The reference is `model.probabilities` (the Keras serving model's logits, softmax(logits /
    T) in NumPy), not the converted Keras model, so the calibration layer is checked too.
    Returns the figures and whether they pass (`passed`).
    """
    import numpy as np

    expected = model.probabilities(images)
    with _quiet_native(verbose):
        try:
            got = _run_artifact(format, artifact, images)
        except Exception as error:   # a converter can write a graph its own runtime cannot load
            message = " ".join(str(error).split())[:300]
            raise ExportRefused(f"the {format} runtime cannot run the converted model ({type(error).__name__}: "
                                f"{message}); not exported (try another --format)") from error
        encoded = None
        if format == "saved_model":   # the bytes signature too, on lossless PNGs of the same images
            encoded = _saved_model_bytes(artifact, images[:BYTES_PARITY_IMAGES])
    differences = np.abs(got - expected)
    if encoded is not None:
        differences = np.concatenate([differences, np.abs(encoded - expected[:BYTES_PARITY_IMAGES])])
    top = expected.argmax(1)
    agree = got.argmax(1) == top
    ordered = np.sort(expected, axis=1)
    decisive = ordered[:, -1] - ordered[:, -2] >= INT8_TIE if expected.shape[1] > 1 else np.ones(len(top), bool)
    parity = {
        "format": format, "quantize": quantize, "split": split, "images": int(len(images)),
        "bytes_images": 0 if encoded is None else int(len(encoded)),
        "max_abs_difference": float(differences.max()) if differences.size else 0.0,
        "top1_agreement": float(agree.mean()) if len(agree) else 1.0,
        "keras_accuracy": float(np.mean(top == labels)) if len(labels) else None,
        "artifact_accuracy": float(np.mean(got.argmax(1) == labels)) if len(labels) else None,
    }
    parity["accuracy_drop"] = (None if parity["keras_accuracy"] is None
                               else parity["keras_accuracy"] - parity["artifact_accuracy"])
    if quantize == "int8":
        parity["decisive_images"] = int(decisive.sum())
        parity["decisive_agreement"] = float(agree[decisive].mean()) if decisive.any() else 1.0
        parity["min_agreement"] = INT8_MIN_AGREEMENT
        parity["passed"] = bool(np.isfinite(got).all() and parity["decisive_agreement"] >= INT8_MIN_AGREEMENT)
    else:
        parity["tolerance"] = TOLERANCES[(format, quantize)]
        # `not (d > t)` would let NaN through: NaN compares False either way.
        parity["passed"] = bool(parity["max_abs_difference"] <= parity["tolerance"])
    return parity


def parity_line(parity):
    """One line: the format, max abs difference, top-1 agreement and the tolerance (int8: the accuracy drop)."""
    name = parity["format"] + (f" {parity['quantize']}" if parity["quantize"] else "")
    where = f"{parity['images']} {parity['split']} images"
    if parity["bytes_images"]:
        where += f" (+{parity['bytes_images']} as PNG bytes)"
    line = (f"parity {name}: max abs difference {parity['max_abs_difference']:.2g}, "
            f"top-1 agreement {parity['top1_agreement']:.4f} on {where}")
    if "tolerance" in parity:
        return line + f"; tolerance {parity['tolerance']:g}"
    drop = parity["accuracy_drop"]
    return (line + f"; {parity['decisive_agreement']:.4f} without near-ties (required >= {parity['min_agreement']:g}); "
            f"accuracy {_figure(parity['keras_accuracy'])} -> {_figure(parity['artifact_accuracy'])}"
            + ("" if drop is None else f" (drop {drop:+.4f})"))


def _batches(images):
    return (images[start:start + PARITY_BATCH] for start in range(0, len(images), PARITY_BATCH))


def _run_artifact(format, path, images):
    """Probabilities of the artifact at `path` on uint8 `images`, loaded with its own runtime."""
    import numpy as np

    if format == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        outputs = [serve(image=tf.constant(batch))["probabilities"].numpy() for batch in _batches(images)]
    elif format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        (name,) = runner.get_input_details()
        outputs = [next(iter(runner(**{name: batch}).values())) for batch in _batches(images)]
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs = [session.run(None, {name: batch})[0] for batch in _batches(images)]
    return np.concatenate(outputs).astype(np.float64)


def _saved_model_bytes(path, images):
    """The SavedModel's `serve_bytes` probabilities on `images` encoded as PNG files."""
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SAVED_MODEL_BYTES_SIGNATURE]
    encoded = tf.stack([tf.io.encode_png(image) for image in images])
    return serve(image_bytes=encoded)["probabilities"].numpy().astype(np.float64)


# ## The model card

def model_card(model, format, quantize, parity, split, accuracy, examples, artifact):
    """model_card.md: what the artifact is, what it was trained on, how well it does, how to run it."""
    import keras
    import tensorflow as tf

    info, data = model.info, model.info.get("data") or {}
    validation = info.get("validation") or {}
    name = format + (f" {quantize}" if quantize else "")
    size = sum(file.stat().st_size for file in Path(artifact).rglob("*") if file.is_file()) \
        if Path(artifact).is_dir() else Path(artifact).stat().st_size
    preprocess = (f"`keras.applications.{info['preprocess']}.preprocess_input`" if info.get("preprocess")
                  else "scaled to [0, 1] (`/ 255`)")
    lines = [
        f"# Model card: {model.folder.name} ({name})", "",
        f"Exported {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`headstart export` from `{model.folder}` (TensorFlow {tf.__version__}, Keras {keras.__version__}).", "",
        "## Model", "",
        f"- recipe: {info.get('recipe') or 'unknown'}; backbone: {info.get('backbone') or 'unknown'}",
        f"- artifact: `{Path(artifact).name}`, {size / 1e6:.2f} MB"
        + (f", weights {quantize}" if quantize == "float16" else ", int8 weights and activations" if quantize else ""),
        f"- input: uint8 images (batch, {', '.join(map(str, model.input_shape))}), values 0-255; "
        f"preprocessing inside the model: {preprocess}",
        f"- output: probabilities of the {len(model.class_names)} classes in `{LABELS_FILE}` order",
    ]
    if format == "saved_model":
        lines.append(f"- signatures: `serving_default` (= `serve`, uint8 images `image` -> `probabilities`) and "
                     f"`{SAVED_MODEL_BYTES_SIGNATURE}` (a batch of encoded JPEG/PNG/BMP/GIF files `image_bytes`, "
                     "any size, decoded and resized as in training)")
    lines += [
        "", "## Data", "",
        f"- source: {data.get('source')}; classes (output order): {', '.join(model.class_names)}",
        f"- labels per class: {data.get('labels_per_class') or 'all'}; seed {data.get('seed')}; validation "
        f"fraction {data.get('validation_fraction')}, test fraction {data.get('test_fraction')}",
        "", "## Metrics", "",
        f"- Keras model, {split} split ({examples} images): accuracy {_figure(accuracy)}",
    ]
    if validation:
        lines.append(f"- validation ({validation.get('examples')} images): accuracy "
                     f"{_figure(validation.get('accuracy'))}, log loss {_figure(validation.get('log_loss'))}")
    temperature = (f"temperature {model.temperature:.4f}, fitted on the validation split (log loss "
                   f"{_figure(validation.get('log_loss'))} -> {_figure(validation.get('calibrated_log_loss'))})"
                   if model.calibrated else "none (temperature 1: the run has no fitted temperature)")
    lines += [
        "", "## Calibration", "", f"Probabilities are softmax(logits / T), {temperature}.",
        "", "## Parity with the Keras model", "",
        f"{parity_line(parity)}.",
        f"Artifact accuracy on those images: {_figure(parity['artifact_accuracy'])} "
        f"(Keras: {_figure(parity['keras_accuracy'])}).",
        "", "## Use", "", "```python", *_usage(format, model), "```", "",
    ]
    return "\n".join(lines)


def _usage(format, model):
    shape = ", ".join(map(str, model.input_shape))
    images = f"images = np.zeros((1, {shape}), np.uint8)   # your images, 0-255"
    labels = f'labels = open("{LABELS_FILE}").read().splitlines()'
    if format == "saved_model":
        return ["import numpy as np, tensorflow as tf", labels,
                f'model = tf.saved_model.load("{ARTIFACTS[format]}")', images,
                'probabilities = model.signatures["serving_default"](image=tf.constant(images))["probabilities"]',
                f'probabilities = model.signatures["{SAVED_MODEL_BYTES_SIGNATURE}"](image_bytes=tf.constant('
                '[open("photo.jpg", "rb").read()]))["probabilities"]']
    if format == "litert":
        return ["import numpy as np", "from ai_edge_litert.interpreter import Interpreter", labels,
                f'runner = Interpreter(model_path="{ARTIFACTS[format]}").get_signature_runner()', images,
                "probabilities = runner(image=images)['output_0']"]
    return ["import numpy as np, onnxruntime", labels,
            f'session = onnxruntime.InferenceSession("{ARTIFACTS[format]}")', images,
            'probabilities = session.run(None, {"image": images})[0]']
