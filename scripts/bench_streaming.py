"""Benchmark: peak memory of one epoch over an image folder, streamed by headstart vs. loaded into one NumPy array.

    python scripts/bench_streaming.py [--images 5000] [--image-size 160] [--source-size 64] [--fit]

Generates a folder of small JPEGs (`--classes` sub-folders) whose decoded size at the
training image size, in float32, is large (1.5 GB with the defaults), then passes over
every image once in three ways, each in its own fresh process so each peak is its own:
  1. stream:  `headstart.recipes.data.load(folder, cache=False)`, iterating the train and val splits
              (what a folder larger than `pipeline.MEMORY_CACHE_BYTES` gets by default);
  2. default: `headstart.recipes.data.load(folder)` with its defaults, which caches the decoded
              images (uint8) in memory when they fit in `pipeline.MEMORY_CACHE_BYTES`;
  3. numpy:   the usual keras-io way, every image read with `keras.utils.load_img` into
              one preallocated float32 array, then iterated in batches.
With `--fit`, each way runs one epoch of `model.fit` of a tiny convolutional model
(train and val splits) instead of a bare pass. Prints the decoded size, each way's peak
resident memory above its own baseline (measured after the imports, right before the
data is touched), and the ratios. The folder goes to a temporary directory, deleted at
the end, unless `--keep-dir DIR` is given (an existing folder made by this script is
reused).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

WAYS = ("stream", "default", "numpy")
FORMATS = {"jpeg": "jpg", "png": "png"}
# The validation share both ways hold out: every image is decoded once per pass.
VALIDATION_FRACTION = 0.2


def make_image_folder(root, *, images, classes, source_size, image_format="jpeg", seed=0):
    """Write `images` RGB images of `source_size` px, spread over `classes` sub-folders.

    Each image is a 4x4 grid of random colours blown up bilinearly, tinted by its class:
    smooth, so files stay small and quick to write, yet every image differs.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    extension = FORMATS[image_format]
    for label in range(classes):
        os.makedirs(os.path.join(root, f"class_{label}"), exist_ok=True)
    for index in range(images):
        label = index % classes
        grid = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        grid[..., label % 3] = np.maximum(grid[..., label % 3], 128)
        image = Image.fromarray(grid).resize((source_size, source_size), Image.BILINEAR)
        image.save(os.path.join(root, f"class_{label}", f"{index:06d}.{extension}"))


def decoded_bytes(images, image_size):
    """What `images` RGB images take decoded at `image_size` px in float32."""
    return images * image_size * image_size * 3 * 4


def measure(way, folder, *, image_size, batch_size, fit=False):
    """Run `way` over `folder` in a fresh Python process; its report as a dict
    (baseline, peak and growth of resident memory in bytes, examples, seconds, cached)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", way, "--folder", folder,
               "--image-size", str(image_size), "--batch-size", str(batch_size)] + (["--fit"] if fit else [])
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
    if finished.returncode != 0:
        raise RuntimeError(f"{way} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _child(args):
    """One way, in this fresh process: prints its report as one JSON line."""
    import keras

    from headstart.recipes import data
    from headstart.recipes.data import folder, pipeline

    _, paths, labels = folder.list_images(args.folder)
    model = _tiny_model(args.image_size, int(labels.max()) + 1) if args.fit else None
    baseline = _start_peak_tracking()
    started = time.perf_counter()
    cached = False
    if args.child == "numpy":
        examples = _numpy_way(paths, labels, args, model, keras)
    else:
        splits = data.load(args.folder, image_size=args.image_size, batch_size=args.batch_size,
                           validation_fraction=VALIDATION_FRACTION, test_fraction=0,
                           cache=args.child == "default")
        cached = pipeline.caches_in_memory(splits.num_examples.values(), splits.spec)
        if model is not None:
            model.fit(splits.train, validation_data=splits.val, epochs=1, verbose=0)
        else:
            for split in (splits.train, splits.val):
                for _ in split:
                    pass
        examples = splits.num_examples["train"] + splits.num_examples["val"]
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(json.dumps({"baseline": baseline, "peak": peak, "growth": peak - baseline, "examples": int(examples),
                      "seconds": seconds, "cached": cached, "peak_source": _PEAK_SOURCE}))


def _numpy_way(paths, labels, args, model, keras):
    """keras-io style: every image in one float32 array, scaled to [0, 1], then batches of it.

    The array is preallocated and filled in place, the frugal form of this way (building a
    list of arrays and stacking it would hold everything twice).
    """
    order = np.random.default_rng(0).permutation(len(paths))
    images = np.empty((len(paths), args.image_size, args.image_size, 3), np.float32)
    for row, index in enumerate(order):
        image = keras.utils.load_img(paths[index], target_size=(args.image_size, args.image_size),
                                     interpolation="bilinear")
        images[row] = keras.utils.img_to_array(image, dtype="float32")
    images /= 255.0
    targets = labels[order]
    train = len(paths) - round(VALIDATION_FRACTION * len(paths))
    if model is not None:
        model.fit(images[:train], targets[:train], validation_data=(images[train:], targets[train:]),
                  batch_size=args.batch_size, epochs=1, verbose=0)
    else:
        for start in range(0, len(paths), args.batch_size):
            images[start:start + args.batch_size].mean()  # touch each batch, as a training step would
    return len(paths)


def _tiny_model(image_size, num_classes):
    import keras

    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.Conv2D(8, 3, strides=4, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


_PEAK_SOURCE = "ru_maxrss"


def _start_peak_tracking():
    """Current resident memory in bytes; from now on `_peak_rss` reports the peak since this call.

    On Linux, writing 5 to /proc/self/clear_refs resets the high-water mark (VmHWM) to the
    current resident size, so the peak excludes the transient memory of the imports.
    Elsewhere the peak is `ru_maxrss`, which may include them (an overestimate).
    """
    global _PEAK_SOURCE
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        _PEAK_SOURCE = "VmHWM"
    except OSError:
        _PEAK_SOURCE = "ru_maxrss"
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss():
    if _PEAK_SOURCE == "VmHWM":
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=_positive, default=5000, help="images to generate (default 5000)")
    parser.add_argument("--classes", type=_positive, default=5, help="class sub-folders (default 5)")
    parser.add_argument("--source-size", type=_positive, default=64,
                        help="side of the generated images in px (default 64); the pipeline resizes them")
    parser.add_argument("--image-size", type=_positive, default=160, help="training image side in px (default 160)")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--format", choices=sorted(FORMATS), default="jpeg")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, among {', '.join(WAYS)}")
    parser.add_argument("--fit", action="store_true", help="one epoch of model.fit instead of a bare pass")
    parser.add_argument("--keep-dir", help="generate the folder here and keep it (reused if it exists)")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return args
    args.ways = [way.strip() for way in args.ways.split(",") if way.strip()]
    if not args.ways or any(way not in WAYS for way in args.ways):
        parser.error(f"--ways must name ways among {', '.join(WAYS)}")
    if args.classes < 2 or args.images < 5 * args.classes:
        parser.error("--classes must be 2 or more, with at least 5 --images per class (some go to validation)")
    if args.keep_dir and os.path.exists(args.keep_dir) and not os.path.isdir(args.keep_dir):
        parser.error(f"--keep-dir {args.keep_dir} is a file, not a folder")
    return args


def main():
    args = _parse_arguments()
    if args.child:
        return _child(args)
    root = os.path.abspath(args.keep_dir) if args.keep_dir else tempfile.mkdtemp(prefix="bench_streaming_")
    try:
        if args.keep_dir and os.path.isdir(root) and os.listdir(root):
            print(f"reusing the images in {root}")
        else:
            started = time.perf_counter()
            make_image_folder(root, images=args.images, classes=args.classes, source_size=args.source_size,
                              image_format=args.format)
            print(f"generated {args.images} {args.source_size}px {args.format} images in "
                  f"{time.perf_counter() - started:.1f} s")
        on_disk = sum(entry.stat().st_size for label in os.scandir(root) if label.is_dir()
                      for entry in os.scandir(label.path))
        reports = {way: measure(way, root, image_size=args.image_size, batch_size=args.batch_size, fit=args.fit)
                   for way in args.ways}
    finally:
        if not args.keep_dir:
            shutil.rmtree(root, ignore_errors=True)

    images = next(iter(reports.values()))["examples"]
    decoded = decoded_bytes(images, args.image_size)
    print(f"{images} images in {args.classes} classes ({on_disk / 1e6:.0f} MB on disk), decoded at "
          f"{args.image_size}px in float32: {decoded / 1e9:.2f} GB; one {'epoch of model.fit' if args.fit else 'pass'}"
          f", batch {args.batch_size}")
    for way, report in reports.items():
        cached = " (cached in memory)" if report["cached"] else ""
        print(f"  {way:8s}: peak RSS {report['peak'] / 1e6:7.0f} MB, growth over baseline "
              f"{report['growth'] / 1e6:7.0f} MB = {report['growth'] / decoded:6.1%} of the decoded size, "
              f"{report['seconds']:.1f} s{cached}")
    if "numpy" in reports:
        for way in (way for way in reports if way != "numpy"):
            print(f"  growth ratio numpy / {way}: {reports['numpy']['growth'] / max(reports[way]['growth'], 1):.1f}x,"
                  f" peak ratio: {reports['numpy']['peak'] / reports[way]['peak']:.2f}x")
    print(f"  (peak from {reports[args.ways[0]]['peak_source']}; baseline = resident memory after the imports)")


if __name__ == "__main__":
    main()
