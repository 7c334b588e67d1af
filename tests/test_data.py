"""recipes.data: the one data entry point, its three sources, the pipeline and the up-front checks."""

import hashlib
import io
import math
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from headstart.recipes import data, network
from headstart.recipes.data import splitting, tfds_source
from headstart.recipes.errors import UsageError

DIGITS_COUNT = 1797
# Digits at their own 8x8 size, kept in [0, 255]: each image is then exactly its source pixels.
RAW = dict(image_size=8, preprocess=lambda images: images)


def collect(dataset):
    """(images, labels) of a whole split, as NumPy arrays."""
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def fingerprints(images):
    return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}


# ## digits

def test_digits_batches_have_requested_shape_dtype_and_value_range():
    splits = data.load("digits", image_size=(12, 10), batch_size=16)
    images, labels = next(iter(splits.train))

    assert images.shape == (16, 12, 10, 3) and images.dtype == "float32"
    assert labels.shape == (16,) and labels.dtype == "int32"
    assert splits.input_shape == (12, 10, 3)
    assert splits.class_names == [str(digit) for digit in range(10)]
    # No `preprocess`: scaled to [0, 1]; grayscale repeated to 3 equal channels.
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) == pytest.approx(1.0)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_digits_reach_preprocess_in_0_255_and_keras_applications_preprocessors_work():
    import keras

    raw, _ = collect(data.load("digits", **RAW, test_fraction=0).val)
    assert raw.min() == 0.0 and raw.max() == 255.0

    mobilenet = data.load("digits", image_size=8, preprocess=keras.applications.mobilenet_v2.preprocess_input)
    images, _ = collect(mobilenet.val)
    assert images.min() == pytest.approx(-1.0) and images.max() == pytest.approx(1.0)


def test_digits_splits_add_up_are_stratified_and_do_not_overlap():
    splits = data.load("digits", **RAW, channels=1)
    parts = {name: collect(getattr(splits, name)) for name in ("train", "val", "test")}

    assert sum(splits.num_examples.values()) == DIGITS_COUNT
    assert {name: len(labels) for name, (_, labels) in parts.items()} == splits.num_examples
    for name, fraction in (("val", 0.2), ("test", 0.2), ("train", 0.6)):
        class_counts = np.bincount(parts[name][1], minlength=10)
        all_counts = sum(np.bincount(labels, minlength=10) for _, labels in parts.values())
        np.testing.assert_allclose(class_counts, fraction * all_counts, atol=1.5)
    hashes = {name: fingerprints(images) for name, (images, _) in parts.items()}
    assert sum(map(len, hashes.values())) == DIGITS_COUNT  # the 1,797 digits are all different
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_transfer_split_keeps_only_chosen_classes_relabelled_in_the_given_order():
    everything = data.load("digits", **RAW, channels=1)
    all_images, all_labels = collect(everything.val)
    target = data.load("digits", **RAW, channels=1, classes="target")
    target_images, target_labels = collect(target.val)

    assert target.class_names == ["5", "6", "7", "8", "9"]
    assert set(target_labels) == {0, 1, 2, 3, 4}
    # The same seed puts each digit in the same split whatever the classes kept.
    assert fingerprints(target_images) == fingerprints(all_images[all_labels >= 5])
    for new_label, digit in enumerate(data.DIGITS_TARGET_CLASSES):
        assert fingerprints(target_images[target_labels == new_label]) == \
            fingerprints(all_images[all_labels == digit])

    picked = data.load("digits", **RAW, channels=1, classes=[7, 1])
    images, labels = collect(picked.val)
    assert picked.class_names == ["7", "1"]
    assert fingerprints(images[labels == 0]) == fingerprints(all_images[all_labels == 7])
    assert data.load("digits", classes="source").class_names == ["0", "1", "2", "3", "4"]


def test_few_labels_keeps_exactly_k_training_images_per_class_and_whole_val_test():
    full = data.load("digits", classes="target")
    few = data.load("digits", classes="target", labels_per_class=3, **RAW)

    _, labels = collect(few.train)
    np.testing.assert_array_equal(np.bincount(labels), [3, 3, 3, 3, 3])
    assert few.num_examples == {**full.num_examples, "train": 15}
    # The few labels come from the full training split.
    full_train, _ = collect(data.load("digits", classes="target", **RAW).train)
    assert fingerprints(collect(few.train)[0]) <= fingerprints(full_train)


def test_same_seed_gives_the_same_split_and_another_seed_another():
    def val_fingerprints(seed, labels_per_class=None):
        splits = data.load("digits", **RAW, seed=seed, labels_per_class=labels_per_class)
        return fingerprints(collect(splits.val)[0]), fingerprints(collect(splits.train)[0])

    assert val_fingerprints(0, 2) == val_fingerprints(0, 2)
    assert val_fingerprints(0)[0] != val_fingerprints(1)[0]
    assert val_fingerprints(0, 2)[1] != val_fingerprints(1, 2)[1]


def test_train_order_changes_every_epoch_and_val_order_never():
    splits = data.load("digits", **RAW)
    first, second = collect(splits.train), collect(splits.train)

    assert not np.array_equal(first[1], second[1])
    assert fingerprints(first[0]) == fingerprints(second[0])
    np.testing.assert_array_equal(collect(splits.val)[1], collect(splits.val)[1])


# ## augmentation

def test_augmentation_changes_only_the_training_split():
    splits = data.load("digits", **RAW, shuffle=False, augment=("flip", "rotation", "zoom", "contrast"))
    plain = data.load("digits", **RAW, shuffle=False)

    train_once, train_again = collect(splits.train)[0], collect(splits.train)[0]
    assert not np.allclose(train_once, train_again)
    assert not np.allclose(train_once, collect(plain.train)[0])
    np.testing.assert_array_equal(collect(splits.val)[0], collect(splits.val)[0])
    np.testing.assert_array_equal(collect(splits.val)[0], collect(plain.val)[0])
    np.testing.assert_array_equal(collect(plain.train)[0], collect(plain.train)[0])


def test_augmented_epochs_are_the_same_whether_a_run_starts_there_or_resumes_there():
    # `train_epochs` augments after concatenating the epochs, from seeds made of (seed, epoch,
    # batch): epoch 2 must not depend on whether epochs 0 and 1 ran before it in this process.
    options = dict(**RAW, augment=("flip", "rotation", "zoom", "contrast"), mixup=0.4, cutmix=1.0,
                   batch_size=256)
    splits = data.load("digits", **options)
    steps = math.ceil(splits.num_examples["train"] / 256)
    from_start = list(splits.train_epochs(0, 3).as_numpy_iterator())
    resumed = list(data.load("digits", **options).train_epochs(2, 3).as_numpy_iterator())

    assert len(from_start) == 3 * steps and len(resumed) == steps
    for (images, labels), (images_again, labels_again) in zip(from_start[2 * steps:], resumed):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    # Each epoch and each batch draws its own augmentations and mixes: soft labels everywhere,
    # no two batches with the same mixing weights.
    plain = list(data.load("digits", **RAW, batch_size=256).train_epochs(0, 1).as_numpy_iterator())
    for (images, labels), (plain_images, _) in zip(from_start[:steps], plain):
        assert not np.allclose(images, plain_images)
        assert labels.ndim == 2 and np.any((labels > 0) & (labels < 1))
    weights = [np.round(np.sort(labels.max(axis=1))[:8], 6).tobytes() for _, labels in from_start]
    assert len(set(weights)) == len(weights)


# ## image folder

# Class folder -> gray level of its images, so the labels can be checked from the pixels.
FOLDER_CLASSES = {"cats": 40, "dogs": 140, "birds": 240}


def _image_bytes(level, size, mode, image_format):
    pixels = np.full((*size, 3), level, dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    """3 classes of 4 images each: PNG/JPEG/BMP/GIF, different sizes, RGB and grayscale;
    plus one truncated JPEG, one file that is no image and a text file to ignore."""
    files = [("a.png", (9, 13), "RGB", "PNG"), ("b.jpg", (20, 7), "L", "JPEG"),
             ("c.bmp", (5, 5), "RGB", "BMP"), ("nested/d.gif", (16, 16), "L", "GIF")]
    for class_name, level in FOLDER_CLASSES.items():
        for name, size, mode, image_format in files:
            path = tmp_path / class_name / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_image_bytes(level, size, mode, image_format))
    jpeg = _image_bytes(90, (32, 32), "RGB", "JPEG")
    (tmp_path / "dogs" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "cats" / "not_an_image.png").write_bytes(b"plain text, not a PNG")
    (tmp_path / "cats" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_image_folder_loads_names_and_skips_undecodable_files(image_folder):
    with pytest.warns(data.SkippedImageWarning) as caught:
        splits = data.load(str(image_folder), image_size=(6, 7), batch_size=5, validation_fraction=0.25,
                           test_fraction=0, preprocess=lambda images: images)
    messages = [str(warning.message) for warning in caught if warning.category is data.SkippedImageWarning]

    assert len(messages) == 2
    assert any(str(image_folder / "dogs" / "truncated.jpg") in message for message in messages)
    assert any(str(image_folder / "cats" / "not_an_image.png") in message for message in messages)
    assert splits.class_names == ["birds", "cats", "dogs"]  # sorted folder names
    assert splits.num_examples == {"train": 9, "val": 3, "test": 0} and splits.test is None
    for split in (splits.train, splits.val):
        images, labels = collect(split)
        assert images.shape[1:] == (6, 7, 3)
        # Every image is one flat gray: its level says which folder it came from.
        levels = images.reshape(len(images), -1).mean(axis=1)
        expected = [FOLDER_CLASSES[splits.class_names[label]] for label in labels]
        np.testing.assert_allclose(levels, expected, atol=2)


def test_image_folder_gives_one_channel_when_asked(image_folder):
    with pytest.warns(data.SkippedImageWarning):
        splits = data.load(image_folder, image_size=4, channels=1, test_fraction=0)
    images, _ = collect(splits.val)
    assert images.shape[1:] == (4, 4, 1)


def make_image_folder(root, classes=("a", "b", "c"), per_class=7, size=10, seed=0):
    """`per_class` random RGB PNGs of `size` px in each class sub-folder of `root`; returns `root`.

    Random pixels: a real (if meaningless) folder of images, decoded by the real pipeline."""
    rng = np.random.default_rng(seed)
    for class_name in classes:
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / class_name / f"{index}.png")
    return root


def _one_bit_bmp(path):
    """A BMP PIL reads and TensorFlow's decoder does not (1 bit per pixel)."""
    Image.fromarray(np.eye(6, dtype=bool)).save(path)
    return path


def test_image_folder_skips_bmps_tensorflow_cannot_decode_and_keeps_known_lengths(tmp_path):
    make_image_folder(tmp_path, classes=("a", "b"), per_class=5)
    bad = _one_bit_bmp(tmp_path / "a" / "one_bit.bmp")
    Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / "b" / "gray.bmp")   # 8-bit: kept

    with pytest.warns(data.SkippedImageWarning, match=r"one_bit\.bmp.*1-bit BMP") as caught:
        splits = data.load(str(tmp_path), image_size=4, batch_size=3)
    assert [str(w.message) for w in caught if w.category is data.SkippedImageWarning][0].count("Skipping") == 1
    assert str(bad) in str(caught[0].message)
    assert sum(splits.num_examples.values()) == 11
    for split in ("train", "val", "test"):
        batches = getattr(splits, split)
        # Known to tf.data (no element is dropped on the way), and what the split yields.
        assert batches.cardinality().numpy() == math.ceil(splits.num_examples[split] / 3)
        assert len(collect(batches)[1]) == splits.num_examples[split]


def test_folder_fine_tune_runs_whole_epochs_and_never_runs_out_of_data(tmp_path):
    """Keras warned "Your input ran out of data" after every validation pass and the final
    test evaluation of a folder run: the folder splits had an unknown length (the pipeline
    dropped undecodable files with `ignore_errors`), so Keras found their end by running out."""
    from headstart.models import backbones
    from headstart.recipes import engine

    make_image_folder(tmp_path, per_class=7)
    _one_bit_bmp(tmp_path / "c" / "one_bit.bmp")   # would have been dropped mid-epoch before
    with pytest.warns(data.SkippedImageWarning):
        splits = data.load(str(tmp_path), image_size=8, batch_size=4,
                           preprocess=backbones.get_spec("resnet8").preprocess)
    steps = engine.steps_per_epoch(splits)
    assert splits.num_examples["train"] == 15 and steps == 4   # the last batch is partial
    for epoch in range(3):
        assert sum(1 for _ in splits.train_epochs(epoch, epoch + 1)) == steps
    assert sum(1 for _ in splits.train_epochs(0, 3)) == 3 * steps
    for split in (splits.val, splits.test):
        assert split.cardinality().numpy() == sum(1 for _ in split) > 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine.fine_tune(lambda: backbones.build_classifier("resnet8", splits.num_classes, 8),
                                  splits, head_epochs=2, finetune_epochs=2, learning_rate=1e-2,
                                  finetune_learning_rate=1e-3, options=engine.TrainingOptions(patience=10))
    assert [phase["epochs"] for phase in result.phases] == [2, 2]
    assert result.phases[0]["feature_cache"] is True   # the head phase on cached features, too
    out_of_data = [str(w.message) for w in caught if "ran out of data" in str(w.message)]
    assert out_of_data == []


# ## TFDS (mocked: no download here)

@pytest.fixture
def online(monkeypatch):
    """Pretend the download host is reachable: under mock_data, TFDS never downloads."""
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: True)


def test_tfds_grayscale_dataset_becomes_3_channels(online):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        splits = data.load("tfds:mnist", image_size=(5, 6), batch_size=4)
        images, labels = collect(splits.train)

    assert splits.class_names == [str(digit) for digit in range(10)]
    assert images.shape == (6, 5, 6, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    assert splits.test is not None


def test_tfds_rgb_dataset_of_any_size_is_resized_and_subsettable(online):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        splits = data.load("tfds:tf_flowers", image_size=7, classes=["roses", "daisy"], labels_per_class=2)
        images, labels = collect(splits.train)
        val_images, val_labels = collect(splits.val)

    assert splits.class_names == ["roses", "daisy"]
    assert images.shape == (4, 7, 7, 3) and sorted(labels) == [0, 0, 1, 1]
    assert set(val_labels) == {0, 1} and len(val_labels) == splits.num_examples["val"]


@pytest.fixture(scope="module")
def prepared_tf_flowers(tmp_path_factory):
    """A data dir holding a really prepared `tf_flowers`, built offline from a 15-image archive."""
    # A declared dependency: TFDS 4.9.10 needs it to prepare any dataset (tensorflow/datasets#11212).
    import importlib_resources  # noqa: F401
    import tarfile

    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("tfds")
    archive = root / "flower_photos.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for level, class_name in ((30, "daisy"), (130, "roses"), (230, "tulips")):
            for index in range(5):
                image = _image_bytes(level, (10 + index, 12), "RGB", "JPEG")
                member = tarfile.TarInfo(f"flower_photos/{class_name}/{index}.jpg")
                member.size = len(image)
                tar.addfile(member, io.BytesIO(image))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds.download.DownloadManager, "download", lambda self, url: str(archive))
        tfds.builder("tf_flowers", data_dir=str(root / "data")).download_and_prepare()
    return root / "data"


def test_tfds_prepared_dataset_loads_offline_with_train_sliced_into_splits(prepared_tf_flowers, monkeypatch):
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    splits = data.load("tfds:tf_flowers", data_dir=str(prepared_tf_flowers), image_size=6,
                       preprocess=lambda images: images)

    assert splits.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert splits.num_examples == {"train": 9, "val": 3, "test": 3}  # train[:60%], [60%:80%], [80%:]
    parts = {name: collect(getattr(splits, name)) for name in ("train", "val", "test")}
    assert sum(len(labels) for _, labels in parts.values()) == 15
    for images, labels in parts.values():
        levels = images.reshape(len(images), -1).mean(axis=1)
        expected = [{"daisy": 30, "roses": 130, "tulips": 230}[splits.class_names[label]] for label in labels]
        np.testing.assert_allclose(levels, expected, atol=3)

    few = data.load("tfds:tf_flowers", data_dir=str(prepared_tf_flowers), classes=["tulips", "daisy"],
                    labels_per_class=2, image_size=6)
    assert few.class_names == ["tulips", "daisy"]
    assert sorted(collect(few.train)[1]) == [0, 0, 1, 1] and few.num_examples["train"] == 4
    with pytest.raises(UsageError, match="Unknown class"):
        data.check_source("tfds:tf_flowers", data_dir=str(prepared_tf_flowers), classes=["roses", "lilies"])


@pytest.mark.parametrize("available, expected", [
    ((), {"train": "train[:60%]", "val": "train[60%:80%]", "test": "train[80%:]"}),
    (("train",), {"train": "train[:60%]", "val": "train[60%:80%]", "test": "train[80%:]"}),
    (("train", "test"), {"train": "train[:80%]", "val": "train[80%:100%]", "test": "test"}),
    (("train", "validation", "test"), {"train": "train", "val": "validation", "test": "test"}),
])
def test_tfds_uses_its_own_splits_and_slices_train_for_the_rest(available, expected):
    assert tfds_source.split_plan(available, 0.2, 0.2, "tfds:x") == expected


def test_tfds_split_plan_without_test_and_without_train():
    assert tfds_source.split_plan(("train",), 0.1, 0.0, "tfds:x") == {"train": "train[:90%]",
                                                                      "val": "train[90%:100%]"}
    with pytest.raises(UsageError, match="no 'train' split"):
        tfds_source.split_plan(("test",), 0.2, 0.2, "tfds:x")


def test_tfds_dataset_not_prepared_offline_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    started = time.monotonic()
    with pytest.raises(UsageError) as error:
        data.load("tfds:tf_flowers", data_dir=str(tmp_path))

    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "'tf_flowers'" in message and "cannot be downloaded here" in message
    assert "--data-dir" in message and "tfds build tf_flowers" in message and "\n" not in message


# ## check_source: bad input fails before any data is read

@pytest.mark.parametrize("source, options, fragment", [
    ("no/such/folder", {}, "does not exist"),
    ("ftp:somewhere", {}, "Unknown data source kind 'ftp'"),
    ("mnist", {}, "Did you mean 'tfds:mnist'?"),
    ("tfds:not_a_dataset", {}, "Unknown TFDS dataset 'not_a_dataset'"),
    ("tfds:cifar10:nope", {}, "Unknown config 'nope'"),
    ("tfds:glue", {}, "not an image classification dataset"),
    ("tfds:imagenet2012", {}, "needs a manual download"),
    ("digits", {"validation_fraction": 0}, "validation_fraction"),
    ("digits", {"validation_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
    ("digits", {"test_fraction": -0.1}, "test_fraction"),
    ("digits", {"labels_per_class": 0}, "labels_per_class"),
    ("digits", {"labels_per_class": 500}, "more than the 104 training images"),
    ("digits", {"classes": "target", "labels_per_class": 105}, "at most 104"),
    ("digits", {"classes": [3, 12]}, "Unknown class(es) '12'"),
    ("digits", {"classes": [3]}, "at least 2 different classes"),
    ("digits", {"image_size": 0}, "image_size"),
    ("digits", {"image_size": (8, 8, 3)}, "image_size"),
    ("digits", {"channels": 4}, "channels"),
    ("digits", {"batch_size": 0}, "batch_size"),
    ("digits", {"augment": ("flip", "blur")}, "augment"),
])
def test_check_source_rejects_bad_input_with_a_message_naming_it(source, options, fragment):
    with pytest.raises(UsageError) as error:
        data.check_source(source, **options)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_check_source_rejects_folders_without_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(UsageError, match="at least 2 classes; found only 'only'"):
        data.check_source(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="'empty' .* hold no"):
        data.check_source(str(tmp_path))
    with pytest.raises(UsageError, match="is a file, not a folder"):
        data.check_source(str(tmp_path / "only" / "a.png"))
    Image.new("RGB", (4, 4)).save(tmp_path / "empty" / "b.png")
    with pytest.raises(UsageError, match="preset of the digits source"):
        data.check_source(str(tmp_path), classes="source")


def test_check_source_normalises_options():
    spec = data.check_source("digits", image_size=16, augment="zoom,flip", classes="7,1")
    assert spec.image_size == (16, 16) and spec.input_shape == (16, 16, 3)
    assert spec.augment == ("flip", "zoom")  # always applied in `AUGMENTATIONS` order
    assert spec.classes == ("7", "1")
    assert set(data.AUGMENTATIONS) == {"flip", "rotation", "zoom", "contrast"}


def test_check_source_imports_no_tensorflow(image_folder):
    script = ("import sys; from headstart.recipes import data; "
              f"data.check_source('digits', classes='target', labels_per_class=5); "
              f"data.check_source({str(image_folder)!r}, labels_per_class=2); "
              "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'")
    subprocess.run([sys.executable, "-c", script], check=True)


def test_list_datasets_names_each_kind_of_source():
    names = [name for name, description in data.list_datasets()]
    assert names[0] == "digits" and "PATH" in names
    assert any(name.startswith("tfds:") for name in names)


# ## helpers

def test_split_sizes_keep_a_training_example_in_every_class():
    assert splitting.split_sizes(100, 0.2, 0.2) == (60, 20, 20)
    assert splitting.split_sizes(1, 0.2, 0.2) == (1, 0, 0)
    assert splitting.split_sizes(2, 0.4, 0.4) == (1, 1, 0)


def test_is_online_answers_from_a_local_socket_quickly(monkeypatch):
    monkeypatch.setattr(network.urllib.request, "getproxies", dict)  # connect directly, whatever the env
    network.is_online.cache_clear()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert network.is_online("127.0.0.1", port, timeout=2.0)
    started = time.monotonic()
    assert not network.is_online("127.0.0.1", port, timeout=1.0)  # closed now
    assert time.monotonic() - started < 2
    assert network.is_online("127.0.0.1", port, timeout=2.0)  # cached for the process
    network.is_online.cache_clear()
