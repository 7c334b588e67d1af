"""A folder of images, one sub-folder per class: listed cheaply, pre-scanned with PIL, decoded by tf.data.

    flowers/
      daisy/   a.jpg b.png ...
      tulip/   c.jpg nested/d.gif ...

Class names are the sub-folder names, sorted (labels follow that order, as in
`keras.utils.image_dataset_from_directory`); images in nested folders belong to their
top-level class. Any size, RGB, RGBA or grayscale; GIFs give their first frame.

Why a pre-scan: a file TensorFlow cannot decode stops `image_dataset_from_directory`
with an error in the middle of an epoch. Each file is checked once with PIL (JPEGs are
decoded at 1/8 scale, PNGs have their checksums verified; about 1 ms a file), and every
file that fails is named in one `SkippedImageWarning` (Python `warnings`) and left out.
The scan also refuses what PIL reads but TensorFlow's decoders do not (BMPs of 1, 4 or
16 bits per pixel), so every file that passes decodes in the pipeline: the splits keep
their known length (the pipeline does not drop elements; see `pipeline._pipeline`). Only
paths are held in memory: images are read and decoded inside the tf.data pipeline, so a
large folder streams from disk.
"""

import concurrent.futures
import os
import warnings

import numpy as np

# The formats tf.io.decode_image reads; other files in the class folders are ignored.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "PNG")
# TensorFlow's BMP decoder takes its channels from the bits per pixel (bits / 8) and reads
# only these; PIL reads the others too (a 1-bit BMP fails in TensorFlow with "Number of
# channels inherent in the image must be 1, 3 or 4, was 0").
TENSORFLOW_BMP_BITS = (8, 24, 32)
# PIL releases the GIL while decoding, so a few threads speed up the pre-scan.
SCAN_THREADS = min(8, os.cpu_count() or 1)


class SkippedImageWarning(UserWarning):
    """A file in an image folder could not be decoded and was left out."""


def list_images(path):
    """(class_names, paths, labels) of an image folder, without opening any image.

    Hidden files and folders (".name") are ignored, as are files whose extension is not
    one of `IMAGE_EXTENSIONS`. Links are followed, but each folder and each file is listed
    once, whatever the links: a link back up the tree (a cycle) is not walked again, and a
    file reached twice (two links, or a link into another class) counts once, where it is
    met first, so one image cannot land in two splits. A folder that cannot be read raises
    `UsageError` naming it (not "no images").
    """
    from headstart.recipes.errors import UsageError

    class_names = sorted(entry.name for entry in os.scandir(path)
                         if entry.is_dir() and not entry.name.startswith("."))
    paths, labels, unreadable = [], [], []
    seen_folders, seen_files = set(), set()
    for label, class_name in enumerate(class_names):
        for root, folders, files in os.walk(os.path.join(path, class_name), followlinks=True,
                                            onerror=lambda error: unreadable.append(error.filename)):
            identity = _identity(root)
            if identity in seen_folders:
                folders[:] = []
                continue
            seen_folders.add(identity)
            folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
            for file in sorted(files):
                if not file.startswith(".") and file.lower().endswith(IMAGE_EXTENSIONS):
                    identity = _identity(os.path.join(root, file))
                    if identity is None or identity in seen_files:
                        continue   # a broken link (the pre-scan would name it), or listed already
                    seen_files.add(identity)
                    paths.append(os.path.join(root, file))
                    labels.append(label)
    if unreadable:
        raise UsageError(f"Image folder {path}: cannot read {', '.join(unreadable[:3])}"
                         f"{f' and {len(unreadable) - 3} more' if len(unreadable) > 3 else ''} (permission denied "
                         "or unreadable); fix their permissions or remove them")
    return class_names, np.array(paths, dtype=str), np.array(labels, dtype=np.int64)


def _identity(path):
    """The file or folder a path leads to, after links: (device, inode); None if it leads nowhere."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def read(spec):
    """The images of `spec`'s folder, minus undecodable files, split and selected: a `pipeline.Records`."""
    from headstart.recipes.data import pipeline

    class_names, paths, labels = list_images(spec.location)
    decodable = np.array(_scan(paths, spec.location), dtype=bool)
    return pipeline.records_from_arrays(paths[decodable], labels[decodable], class_names, spec,
                                        decode=_decode_file)


def undecodable(paths):
    """For each file, None if it decodes as training images do, else why not, as "cannot read it
    (...)" or "cannot decode it as an image (...)" (PIL; a few threads)."""
    with concurrent.futures.ThreadPoolExecutor(SCAN_THREADS) as pool:
        return list(pool.map(_why_undecodable, [str(path) for path in paths]))


def _scan(paths, folder):
    """Whether each file decodes; warns once per file that does not, and refuses a folder where
    none does (rather than let an empty split say it later)."""
    from headstart.recipes.errors import UsageError

    paths = [str(path) for path in paths]
    problems = undecodable(paths)
    if paths and all(problems):
        unreadable = sum(problem.startswith("cannot read") for problem in problems)
        raise UsageError(f"Image folder {folder}: none of its {len(paths)} image files can be used"
                         + (f" ({unreadable} cannot be read)" if unreadable else "")
                         + f"; the first, {paths[0]}: {problems[0]}; point --data at a folder of images")
    for path, problem in zip(paths, problems):
        if problem:
            warnings.warn(f"Skipping {path}: {problem}.", SkippedImageWarning, stacklevel=4)
    return [problem is None for problem in problems]


def _why_undecodable(path):
    """None if PIL can read `path` as a format TensorFlow decodes, else the reason."""
    try:
        open(path, "rb").close()   # a file that cannot be opened is unreadable, not a bad image
    except OSError as error:
        fix = "; fix its permissions" if isinstance(error, PermissionError) else ""
        return f"cannot read it ({error.strerror or type(error).__name__}{fix})"
    reason = _decode_problem(path)
    return None if reason is None else f"cannot decode it as an image ({reason})"


def _decode_problem(path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in DECODABLE_FORMATS:
                return f"{image.format} is not one of {', '.join(DECODABLE_FORMATS)}"
            if image.format == "BMP":
                bits = _bmp_bits_per_pixel(path)
                if bits not in TENSORFLOW_BMP_BITS:
                    return (f"a {bits}-bit BMP; TensorFlow decodes BMPs of "
                            f"{', '.join(map(str, TENSORFLOW_BMP_BITS))} bits per pixel")
            if image.format == "PNG":
                # Checks every chunk's CRC, which catches truncation, without inflating
                # the pixels (a full decode costs ~10x more).
                image.verify()
            else:
                # `verify()` misses truncated JPEGs, BMPs and GIFs, so decode them; `draft`
                # lets a JPEG decode at 1/8 scale, which still reads every byte.
                image.draft("RGB", (1, 1))
                image.load()
    except Exception as error:  # PIL raises many types for bad files; all mean "skip it".
        return f"{type(error).__name__}: {error}"
    return None


def _bmp_bits_per_pixel(path):
    """The bits-per-pixel field where TensorFlow's decoder reads it (offset 28 of the file)."""
    with open(path, "rb") as file:
        header = file.read(30)
    return int.from_bytes(header[28:30], "little") if len(header) == 30 else None


def _decode_file(path):
    import tensorflow as tf

    # channels=3 turns grayscale into RGB and drops an alpha channel, whatever the file holds.
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
