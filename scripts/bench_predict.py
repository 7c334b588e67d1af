"""Throughput of `headstart predict` against the plain Keras way, on the same image files, decoding included.

    python scripts/bench_predict.py [--images 2000] [--size 32] [--rounds 3]

The plain way is what a Keras user writes by hand: open each file with PIL, resize it
(bilinear), stack them, and call `model.predict` on the run's model.keras (which
preprocesses itself). `headstart predict` decodes and resizes in a tf.data pipeline, in
batches, runs the same model, calibrates and writes predictions.csv. Both run `--rounds`
times, alternating; the best round of each is compared (images/s, and the ratio; the goal
is at least 0.95x).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_images(folder, count, size):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for index in range(count):
        pixels = (digits.images[index % len(digits.images)] * 255 / 16).astype(np.uint8)
        path = folder / f"{index:05d}.png"
        Image.fromarray(pixels).resize((size * 2, size * 2), Image.BILINEAR).convert("RGB").save(path)
        paths.append(str(path))
    return paths


def make_run(runs, size):
    from headstart.recipes import cli, finetune

    args = cli.options_for("finetune", weights="none", image_size=size, steps=5, finetune_steps=5, baselines=False,
                           compare_scratch=False, runs_dir=str(runs), name="bench", quiet=True)
    finetune.run(args)
    return runs / "finetune" / "bench"


def plain(run, paths, size):
    import keras
    import numpy as np
    from PIL import Image

    from headstart import models

    models.register_keras_objects()
    model = keras.saving.load_model(run / "model.keras", compile=False)
    images = np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))
                       for path in paths])
    return model.predict(images, batch_size=64, verbose=0)


def ours(run, paths, output):
    from headstart.recipes import predict

    return predict.predict(run, paths, top_k=3, output=output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        (temporary / "images").mkdir()
        paths = make_images(temporary / "images", args.images, args.size)
        run = make_run(temporary / "runs", args.size)
        ours(run, paths[:64], temporary / "warm.csv")   # both load the model once before timing
        plain(run, paths[:64], args.size)
        best = {"plain": float("inf"), "headstart": float("inf")}
        for _ in range(args.rounds):
            for name, call in (("plain", lambda: plain(run, paths, args.size)),
                               ("headstart", lambda: ours(run, paths, temporary / "predictions.csv"))):
                started = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - started)
    rates = {name: args.images / seconds for name, seconds in best.items()}
    print(f"{args.images} PNG files ({args.size * 2} px, resized to {args.size}), best of {args.rounds} rounds:")
    print(f"  plain PIL + model.predict : {rates['plain']:8.0f} images/s")
    print(f"  headstart predict         : {rates['headstart']:8.0f} images/s (CSV written, calibrated)")
    print(f"  ratio headstart / plain   : {rates['headstart'] / rates['plain']:.2f}x")


if __name__ == "__main__":
    main()
