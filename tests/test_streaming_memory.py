"""An image folder streams from disk: one epoch's peak memory stays far below the decoded data.

The memory test generates 4,000 small JPEGs that the pipeline resizes to 112 px: 602 MB
decoded in float32. Each way runs in a fresh process (`scripts/bench_streaming.py`'s
`measure`), whose peak resident memory above its post-import baseline is compared with
that size. Any way of holding every decoded image in memory costs at least a quarter of
it (uint8 instead of float32), so the bound is 25%; streaming measured 6-8% (a few
batches in flight, thread buffers), a uint8 cache about 48%, a float32 NumPy array 100%.
"""

import importlib.util
import os
import shutil

import numpy as np
import pytest

from headstart.recipes import data
from headstart.recipes.data import pipeline

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        "bench_streaming", os.path.join(REPOSITORY, "scripts", "bench_streaming.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench_module()

IMAGES, SOURCE_SIZE, IMAGE_SIZE = 4000, 16, 112
# The smallest copy of every decoded image (uint8) is a quarter of the float32 size.
MAX_GROWTH_SHARE = 0.25


@pytest.mark.slow
def test_an_epoch_over_a_folder_grows_memory_far_less_than_the_decoded_images(tmp_path):
    folder = str(tmp_path / "images")
    bench.make_image_folder(folder, images=IMAGES, classes=5, source_size=SOURCE_SIZE)
    decoded = bench.decoded_bytes(IMAGES, IMAGE_SIZE)
    assert decoded > 600e6

    streamed = bench.measure("stream", folder, image_size=IMAGE_SIZE, batch_size=32)
    in_array = bench.measure("numpy", folder, image_size=IMAGE_SIZE, batch_size=32)

    assert streamed["examples"] == in_array["examples"] == IMAGES
    assert not streamed["cached"]
    # The reference: the same measurement sees the array of every image, so it would see
    # a copy of them in the pipeline too.
    assert in_array["growth"] >= 0.95 * decoded
    assert streamed["growth"] < MAX_GROWTH_SHARE * decoded, (
        f"one epoch grew memory by {streamed['growth'] / 1e6:.0f} MB for {decoded / 1e6:.0f} MB of "
        f"decoded images: something holds every image in memory")


def _write_folder(root, images_per_class=12, size=8):
    rng = np.random.default_rng(0)
    from PIL import Image

    for label in range(3):
        os.makedirs(root / f"c{label}")
        for index in range(images_per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{label}" / f"{index}.png")
    return root


def _epoch(dataset):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def _cache_size(splits):
    return pipeline.cached_bytes(splits.num_examples.values(), splits.spec)


@pytest.mark.parametrize("limit_over_size, served_from_memory", [(0, True), (-1, False)])
def test_folder_is_cached_only_when_it_fits_the_memory_limit(tmp_path, monkeypatch, limit_over_size,
                                                             served_from_memory):
    root = _write_folder(tmp_path / "images")
    size = _cache_size(data.load(str(root), image_size=8, test_fraction=0))
    assert size == 36 * 8 * 8 * 3
    monkeypatch.setattr(pipeline, "MEMORY_CACHE_BYTES", size + limit_over_size)
    splits = data.load(str(root), image_size=8, batch_size=5, test_fraction=0)
    first = _epoch(splits.train)

    # Once the files are gone, only a cache can still serve the images.
    shutil.rmtree(root)
    if served_from_memory:
        second = _epoch(splits.train)
        assert sorted(np.concatenate([labels for _, labels in second])) == \
            sorted(np.concatenate([labels for _, labels in first]))
    else:
        # Streamed: the epoch reads the files again, and they are gone.
        import tensorflow as tf

        with pytest.raises(tf.errors.NotFoundError, match="No such file"):
            _epoch(splits.train)


def test_cached_and_streamed_pipelines_give_the_same_batches(tmp_path):
    root = str(_write_folder(tmp_path / "images"))
    cached = data.load(root, image_size=6, batch_size=5, seed=3, cache=True)
    streamed = data.load(root, image_size=6, batch_size=5, seed=3, cache=False)
    for _ in range(2):  # the order changes every epoch, the same way in both
        for (cached_images, cached_labels), (images, labels) in zip(_epoch(cached.train), _epoch(streamed.train),
                                                                    strict=True):
            np.testing.assert_array_equal(cached_images, images)
            np.testing.assert_array_equal(cached_labels, labels)


def test_data_larger_than_the_limit_is_never_cached_by_default(tmp_path):
    spec = data.check_source(str(_write_folder(tmp_path / "images")), image_size=224)
    # An ImageNet-sized folder (1.28 M images: 193 GB as uint8 at 224 px) streams ...
    assert not pipeline.caches_in_memory([1_281_167, 50_000], spec)
    # ... and so does a split whose size tf.data cannot tell.
    assert not pipeline.caches_in_memory([-2, 500], spec)
    # tf_flowers (3,670 images: 0.55 GB at 224 px) is cached, unless asked not to be.
    assert pipeline.caches_in_memory([2_202, 734, 734], spec)
    assert not pipeline.caches_in_memory([2_202, 734, 734], data.check_source(spec.source, image_size=224,
                                                                              cache=False))
