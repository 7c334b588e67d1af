"""Predict the classes of image files with a finished run's model.

    headstart predict runs/finetune/demo photo.jpg more_photos/ 'shots/*.png'
    headstart predict runs/finetune/demo ./inbox --top-k 1 --output inbox.csv --tta

Takes files, folders (searched recursively for PNG/JPEG/BMP/GIF) and glob patterns. Each
image is decoded and resized exactly as the run's training images were, in batches, so
any number of images streams through in constant memory. Files that cannot be decoded
are named on stderr and skipped. Prints one line per image (path, top classes with their
calibrated probabilities) and writes the same to predictions.csv (--output).

From Python: `predict.predict("runs/finetune/demo", ["photo.jpg"])` returns the rows.
"""

import concurrent.futures
import csv
import glob
import os
import sys
from pathlib import Path

from headstart.recipes import options, trained
from headstart.recipes.errors import UsageError

TOP_K = 3
OUTPUT = "predictions.csv"
BATCH_SIZE = 64


def add_arguments(parser):
    parser.add_argument("run", help="a finished run's folder (runs/finetune/NAME), or a .keras file in one")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders and glob patterns")
    group = parser.add_argument_group("prediction")
    group.add_argument("--top-k", type=int, default=TOP_K, help=f"classes per image. Default: {TOP_K}")
    group.add_argument("--tta", action="store_true",
                       help="test-time augmentation: the mean over each image and its central crop, and their "
                            "mirror images if the run trained with --augment flip")
    group.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"Default: {BATCH_SIZE}")
    group.add_argument("--output", default=OUTPUT, help=f"the CSV file to write. Default: {OUTPUT}")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    options.add_output_arguments(group)


def image_paths(patterns):
    """The image files that `patterns` (files, folders, globs) name, in the given order, each once.

    Folders give their image files recursively in sorted order (hidden ones left out); a
    pattern that matches nothing and is no file or folder raises UsageError.
    """
    from headstart.recipes.data.folder import IMAGE_EXTENSIONS

    found, unmatched = [], []
    for pattern in patterns:
        matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern, recursive=True))
        if not matches:
            unmatched.append(pattern)
        for match in matches:
            if os.path.isdir(match):
                for root, folders, files in os.walk(match, followlinks=True):
                    folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
                    found += [os.path.join(root, file) for file in sorted(files)
                              if not file.startswith(".") and file.lower().endswith(IMAGE_EXTENSIONS)]
            else:
                found.append(match)
    if unmatched:
        raise UsageError(f"no file, folder or glob match for {', '.join(map(repr, unmatched))}: check the paths")
    paths = list(dict.fromkeys(found))
    if not paths:
        raise UsageError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) at {', '.join(map(repr, patterns))}")
    return paths


def validate(args):
    """Every check that needs no TensorFlow; returns (run folder, model.json, image paths)."""
    folder, info = trained.locate(args.run)
    options.check_positive_int(args.top_k, "--top-k")
    options.check_positive_int(args.batch_size, "--batch-size")
    paths = image_paths(args.paths)
    if args.output is None:   # the Python API without a file
        return folder, info, paths
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder: pass a .csv file name")
    if output.exists() and not args.overwrite:
        raise UsageError(f"--output {output} already exists: pass --overwrite to replace it, or another --output")
    options.check_writable_folder(output.parent if str(output.parent) else Path("."), "--output")
    return folder, info, paths


def predict(run, paths, top_k=TOP_K, tta=False, batch_size=BATCH_SIZE, output=None):
    """The rows of predictions.csv for `paths` (files, folders, globs) with the run's model; writes them
    to `output` when given. Undecodable files are left out (named on stderr)."""
    from headstart.recipes import cli

    args = cli.options_for("predict", run, *paths, top_k=top_k, tta=tta, batch_size=batch_size,
                           output=output, overwrite=True, quiet=True)
    folder, _, found = validate(args)
    return list(_predict(args, folder, found, write_to=output))


def run(args):
    folder, _, paths = validate(args)
    output = Path(args.output)
    rows = 0
    for row in _predict(args, folder, paths, write_to=output):
        rows += 1
        if not args.quiet:
            print(f"{row['path']}  " + "  ".join(f"{row[f'class_{k}']} {row[f'probability_{k}']:.3f}"
                                                  for k in range(1, args.top_k + 1) if f"class_{k}" in row))
    print(f"{rows} images predicted; {output}")
    return 0


def _predict(args, folder, paths, write_to=None):
    """Yield one row per decodable image, in `paths` order, while writing them to `write_to` (atomically:
    the CSV appears, complete, when the last row is written)."""
    import numpy as np

    from headstart.recipes.data import folder as image_folder

    # The pre-scan (PIL, threads that release the GIL) runs while the model loads.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        scanning = pool.submit(image_folder.undecodable, paths)
        model = trained.load(folder)
        problems = scanning.result()
    for path, problem in zip(paths, problems):
        if problem:
            print(f"headstart: skipped {path}: {problem}", file=sys.stderr)
    readable = [path for path, problem in zip(paths, problems) if problem is None]
    top_k = min(args.top_k, len(model.class_names))
    columns = ["path", *(f"{what}_{k}" for k in range(1, top_k + 1) for what in ("class", "probability"))]
    temporary = None
    if write_to is not None:
        write_to = Path(write_to)
        temporary = write_to.with_name(f".{write_to.name}.{os.getpid()}.tmp")
        file = open(temporary, "w", newline="")
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
    try:
        done = 0
        for images in batches_of(readable, model, args.batch_size):
            probabilities = model.probabilities(images, tta=args.tta)
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
            for offset in range(len(images)):
                row = {"path": readable[done + offset]}
                for k, label in enumerate(order[offset], start=1):
                    row[f"class_{k}"] = model.class_names[label]
                    row[f"probability_{k}"] = round(float(probabilities[offset, label]), 6)
                if temporary is not None:
                    writer.writerow(row)
                yield row
            done += len(images)
        if temporary is not None:
            file.close()
            os.replace(temporary, write_to)
            temporary = None
    finally:
        if temporary is not None:   # interrupted: no half-written CSV is left behind
            file.close()
            temporary.unlink(missing_ok=True)


def batches_of(paths, model, batch_size):
    """Batches of uint8 images (NumPy) read from `paths`, decoded and resized as in training, in order."""
    import tensorflow as tf

    from headstart.recipes.data.pipeline import image_from_bytes

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, dtype=tf.string))
    dataset = dataset.map(lambda path: image_from_bytes(tf.io.read_file(path), model.image_size, model.channels),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for images in dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE):
        yield images.numpy()


def read_images(paths, image_size, channels):
    """The images at `paths` as one uint8 array (n, height, width, channels), decoded and resized as in training."""
    import numpy as np
    import tensorflow as tf

    from headstart.recipes.data.pipeline import image_from_bytes

    return np.stack([image_from_bytes(tf.io.read_file(str(path)), image_size, channels).numpy() for path in paths])
