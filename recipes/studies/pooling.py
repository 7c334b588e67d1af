"""Study: pooling makes feature maps tolerate small shifts; the output-size formula against Keras.

    headstart study pooling            # about 60 s on 2 busy CPU cores (30 s of CPU time)
    headstart study pooling --quick    # the same code path, less training and a smaller grid

Shifts. A small CNN (`headstart.models.build_cnn`: two blocks of 3x3 convolution, batch norm
and ReLU, each followed by 2x2 max pooling) is trained on the digits at 16x16. Its trained
convolutions are then run three ways: as trained (max pooling), with every max pooling
replaced by 2x2 average pooling, and with the pooling layers removed (the same network
without pooling: a 16x16 map instead of 4x4). Each held-out digit is shifted by one and two
pixels (right, and separately down, filling with background), and the change of the
backbone's output map is measured as ||F(shifted) - F(original)|| / ||F(original)||,
averaged over the images. Without pooling a shifted input gives a shifted map, which at a
given position is a different map; after pooling, a shift smaller than the pooling window
mostly stays inside one window.

Output sizes. A convolution or pooling layer with kernel k, stride s and padding p maps n
positions to floor((n + 2p - k) / s) + 1. Keras' `padding="valid"` is p = 0 (and needs
k <= n). `padding="same"` gives ceil(n / s) outputs: it pads P = max((ceil(n / s) - 1) * s +
k - n, 0) positions in all, floor(P / 2) before and the rest after, so 2p = P in the formula
(p can be a half). The study runs Keras' `Conv2D`, `MaxPooling2D` and `AveragePooling2D` on
real tensors over a grid of sizes, kernels, strides and both paddings and compares every
output shape with the formula.
"""

import itertools
import math

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot, say, verdict

DESCRIPTION = "Feature-map change under 1- and 2-pixel shifts with max, average and no pooling; output sizes vs Keras"
CLAIM = ("Max and average pooling make a feature map change less under small shifts of the input than the same "
         "network without pooling, and a layer's output size is floor((n + 2p - k) / s) + 1, with Keras' 'same' "
         "padding giving ceil(n / s) and 'valid' meaning p = 0.")

# ## The network and its training
IMAGE_SIZE = 16
FILTERS = (8, 16)
LEARNING_RATE = 3e-3
BATCH_SIZE = 32
EPOCHS = 10
SHIFTS = (1, 2)
VARIANTS = ("no pooling", "max pooling", "average pooling")

# ## The output-size grid
SIZES = tuple(range(1, 17))
KERNELS = (1, 2, 3, 5)
STRIDES = (1, 2, 3)
PADDINGS = ("valid", "same")
LAYERS = ("Conv2D", "MaxPooling2D", "AveragePooling2D")

QUICK = {"epochs": 1, "sizes": (1, 4, 7, 10), "kernels": (1, 3), "strides": (1, 2)}

# ## What counts as shown: at every shift, pooling's change is below this fraction of the change
# without pooling (measured in the default run: max 0.77 and 0.70, average 0.61 and 0.68 at one
# and two pixels).
LESS_CHANGE = 0.9


def load_images(seed):
    """Digits at `IMAGE_SIZE` in [0, 1] (background 0) from `headstart.recipes.data`."""
    from headstart.recipes import data
    from headstart.recipes.studies.optimizers import dataset_arrays

    splits = data.load("digits", image_size=IMAGE_SIZE, channels=1, test_fraction=0.0, seed=seed, shuffle=False)
    return dataset_arrays(splits.train), dataset_arrays(splits.val)


def train_cnn(train, validation, epochs, seed):
    say(f"training the max-pooling CNN {FILTERS} on {IMAGE_SIZE}x{IMAGE_SIZE} digits ({epochs} epochs)")
    import keras

    from headstart.models import build_cnn

    keras.utils.set_random_seed(seed)
    model = build_cnn((IMAGE_SIZE, IMAGE_SIZE, 1), 10, filters=FILTERS, pooling="max")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(*train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    accuracy = float(model.evaluate(*validation, verbose=0)[1])
    return model, accuracy


def feature_extractors(model):
    """The trained backbone three ways: its convolutions with no pooling, max pooling, average pooling."""
    import keras

    backbone = model.get_layer("backbone")
    extractors = {}
    for variant in VARIANTS:
        inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1))
        x = inputs
        for layer in backbone.layers[1:]:
            if isinstance(layer, keras.layers.MaxPooling2D):
                if variant == "max pooling":
                    x = layer(x)
                elif variant == "average pooling":
                    x = keras.layers.AveragePooling2D(layer.pool_size, name=f"{layer.name}_avg")(x)
            else:
                x = layer(x)  # the trained convolution, batch norm or activation, shared
        extractors[variant] = keras.Model(inputs, x, name=variant.replace(" ", "_"))
    return extractors


def shift(images, pixels, axis):
    """Move the image content `pixels` to the right (axis 2) or down (axis 1), background filling in."""
    shifted = np.zeros_like(images)
    if axis == 1:
        shifted[:, pixels:] = images[:, :-pixels]
    else:
        shifted[:, :, pixels:] = images[:, :, :-pixels]
    return shifted


def relative_change(extractor, images, shifted):
    original = np.asarray(extractor(images, training=False)).reshape(len(images), -1)
    moved = np.asarray(extractor(shifted, training=False)).reshape(len(images), -1)
    return np.linalg.norm(moved - original, axis=1) / np.maximum(np.linalg.norm(original, axis=1), 1e-12)


def shift_changes(extractors, images):
    """Per variant and shift: the relative change of the map for every image (right and down shifts)."""
    return {variant: {pixels: np.concatenate([relative_change(extractor, images, shift(images, pixels, axis))
                                              for axis in (1, 2)])
                      for pixels in SHIFTS}
            for variant, extractor in extractors.items()}


# ## The output-size formula against Keras

def formula_size(n, kernel, stride, padding):
    """floor((n + 2p - k) / s) + 1, with 2p = 0 ("valid") or Keras' total "same" padding."""
    total_padding = 0 if padding == "valid" else max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
    return (n + total_padding - kernel) // stride + 1


def keras_size(layer_name, n, kernel, stride, padding):
    """The output height Keras' layer gives on a real (1, n, n + 1, 1) tensor."""
    import keras

    if layer_name == "Conv2D":
        layer = keras.layers.Conv2D(1, kernel, strides=stride, padding=padding)
    else:
        layer = getattr(keras.layers, layer_name)(pool_size=kernel, strides=stride, padding=padding)
    # Height n and width n + 1: a swapped axis would show.
    output = layer(np.zeros((1, n, n + 1, 1), dtype="float32"))
    return int(output.shape[1]), int(output.shape[2])


def size_grid(sizes, kernels, strides):
    say(f"output sizes of {', '.join(LAYERS)} over {len(sizes)} sizes, {len(kernels)} kernels, "
        f"{len(strides)} strides, {len(PADDINGS)} paddings")
    points = []
    for layer_name, n, kernel, stride, padding in itertools.product(LAYERS, sizes, kernels, strides, PADDINGS):
        if padding == "valid" and kernel > n:
            continue  # no output position fits (the formula gives 0 or less); Keras refuses it
        formula = [formula_size(n, kernel, stride, padding), formula_size(n + 1, kernel, stride, padding)]
        points.append({"layer": layer_name, "n": n, "kernel": kernel, "stride": stride, "padding": padding,
                       "keras": list(keras_size(layer_name, n, kernel, stride, padding)), "formula": formula,
                       "same_is_ceil": padding != "same" or formula == [math.ceil(n / stride), math.ceil((n + 1) / stride)]})
    return points


def plot(changes, points, example, accuracy):
    plt = pyplot()
    figure = plt.figure(figsize=(16, 5), layout="constrained")
    grid = figure.add_gridspec(2, 5, width_ratios=[1.5, 0.45, 0.45, 0.45, 1.3])
    bars = figure.add_subplot(grid[:, 0])
    width = 0.25
    for index, variant in enumerate(VARIANTS):
        means = [changes[variant][pixels].mean() for pixels in SHIFTS]
        bars.bar(np.arange(len(SHIFTS)) + (index - 1) * width, means, width, label=variant, color=f"C{index}")
    bars.set_xticks(range(len(SHIFTS)), [f"{pixels}-pixel shift" for pixels in SHIFTS])
    bars.set_ylabel("||F(shifted) - F(original)|| / ||F(original)||")
    bars.set_title(f"Change of the backbone's map under shifts\n(trained CNN, val accuracy {accuracy:.2f})", fontsize=10)
    bars.legend(fontsize=8)
    bars.grid(alpha=0.3, axis="y")
    for column, (variant, maps) in enumerate(example.items(), start=1):
        top = max(feature_map.max() for feature_map in maps.values())
        for row, (label, feature_map) in enumerate(maps.items()):
            axes = figure.add_subplot(grid[row, column])
            axes.imshow(feature_map, cmap="viridis", vmin=0, vmax=top)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(f"{variant}\n{label}" if row == 0 else label, fontsize=8)
    scatter = figure.add_subplot(grid[:, 4])
    agree = sum(point["keras"] == point["formula"] for point in points)
    for padding, marker in (("valid", "o"), ("same", "x")):
        chosen = [point for point in points if point["padding"] == padding]
        scatter.plot([point["formula"][0] for point in chosen], [point["keras"][0] for point in chosen], marker,
                     alpha=0.5, label=f'padding "{padding}"')
    top = max(point["keras"][0] for point in points)
    scatter.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
    scatter.set_xlabel("floor((n + 2p - k) / s) + 1")
    scatter.set_ylabel("output size of the Keras layer")
    scatter.set_title(f"Output sizes: {agree} of {len(points)} layer configurations agree\n"
                      f"({', '.join(LAYERS)}; \"same\" gives ceil(n / s))", fontsize=10)
    scatter.legend(fontsize=8)
    scatter.grid(alpha=0.3)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    epochs = QUICK["epochs"] if quick else EPOCHS
    sizes, kernels, strides = ((QUICK["sizes"], QUICK["kernels"], QUICK["strides"]) if quick
                               else (SIZES, KERNELS, STRIDES))

    # ## Train, then the same convolutions with each kind of pooling
    train, validation = load_images(seed)
    model, accuracy = train_cnn(train, validation, epochs, seed)
    extractors = feature_extractors(model)
    images = validation[0]
    changes = shift_changes(extractors, images)
    mean_change = {variant: {pixels: float(values.mean()) for pixels, values in by_shift.items()}
                   for variant, by_shift in changes.items()}

    # One digit's strongest channel (the same one in every variant), original and shifted by
    # one pixel, for the figure.
    one, moved = images[:1], shift(images[:1], 1, 2)
    maps = {variant: (np.asarray(extractor(one, training=False))[0], np.asarray(extractor(moved, training=False))[0])
            for variant, extractor in extractors.items()}
    channel = int(np.argmax(maps["no pooling"][0].sum(axis=(0, 1))))
    example = {variant: {"original": original[..., channel], "shifted 1 px right": shifted[..., channel]}
               for variant, (original, shifted) in maps.items()}

    # ## The output-size grid
    points = size_grid(sizes, kernels, strides)
    mismatches = [point for point in points if point["keras"] != point["formula"] or not point["same_is_ceil"]]

    figure = plot(changes, points, example, accuracy)
    run_dir.save_figure(figure, "pooling.png")

    baseline = mean_change["no pooling"]
    checks = {
        "max_pooling_changes_less": all(mean_change["max pooling"][p] < LESS_CHANGE * baseline[p] for p in SHIFTS),
        "average_pooling_changes_less": all(mean_change["average pooling"][p] < LESS_CHANGE * baseline[p]
                                            for p in SHIFTS),
        "every_output_size_agrees": not mismatches,
    }
    findings = {
        "epochs": epochs, "val_accuracy": accuracy, "images": len(images), "checks": checks,
        "mean_relative_change": mean_change,
        "change_over_no_pooling": {variant: {p: by_shift[p] / baseline[p] for p in SHIFTS}
                                   for variant, by_shift in mean_change.items()},
        "map_shape": {variant: list(extractor.output_shape[1:]) for variant, extractor in extractors.items()},
        "grid_points": len(points), "grid_mismatches": mismatches,
        "grid": {"sizes": list(sizes), "kernels": list(kernels), "strides": list(strides),
                 "paddings": list(PADDINGS), "layers": list(LAYERS)},
    }
    table = markdown_table(["backbone", "output map", *(f"change, {p}-pixel shift" for p in SHIFTS),
                            *(f"vs no pooling, {p} px" for p in SHIFTS)],
                           [(variant, "x".join(map(str, findings["map_shape"][variant])),
                             *(mean_change[variant][p] for p in SHIFTS),
                             *(findings["change_over_no_pooling"][variant][p] for p in SHIFTS)) for variant in VARIANTS])
    table += "\n" + markdown_table(["layer", "configurations", "agree with the formula"],
                                   [(name, sum(point["layer"] == name for point in points),
                                     sum(point["layer"] == name and point not in mismatches for point in points))
                                    for name in LAYERS])
    measured = (f"a one-pixel shift changed the map by {baseline[1]:.2f} without pooling, "
                f"{mean_change['max pooling'][1]:.2f} with max pooling and {mean_change['average pooling'][1]:.2f} with average pooling (two pixels: "
                f"{baseline[2]:.2f}, {mean_change['max pooling'][2]:.2f}, {mean_change['average pooling'][2]:.2f}); "
                f"{len(points) - len(mismatches)} of {len(points)} Keras output shapes matched "
                "floor((n + 2p - k) / s) + 1.")
    supported, summary = verdict(checks, measured)
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
