"""LoRA on a backbone's `Dense` / `EinsumDense` layers, with Keras' own implementation.

    targets = lora.adapt(backbone, rank=4, alpha=8)           # Keras' enable_lora on the chosen layers
    lora.train_adapters(model)                                 # trainable: the LoRA matrices and the head
    lora.save_adapter(backbone, "lora.weights.h5")             # lora_kernel_a / lora_kernel_b only
    lora.load_adapter(fresh_backbone, "lora.weights.h5")       # the same base, adapted the same way

Keras' `enable_lora(rank, lora_alpha)` freezes the layer's kernel and adds two trainable
matrices `lora_kernel_a` (in x rank, random) and `lora_kernel_b` (rank x out, zeros), so an
adapted layer computes `x @ (W + alpha / rank * A @ B)` and starts as the base layer did.
Keras' `.keras` saving writes the merged kernel `W + alpha / rank * A @ B` (and zeroes A, B
on load), so `best.keras`, `model.keras` and every export hold the merged weights.

Which layers: a regular expression searched in each layer's path (`vit_encoder/...` is not
in it: paths are those of the backbone's own layers, `transformer_block_1/mha/query`). The
default is the attention query and value projections when the backbone has them (the LoRA
paper's choice), else every `Dense` layer (an MLP). Convolutions have no LoRA in Keras 3:
a backbone without dense layers to adapt is refused.
"""

import os
import re
from pathlib import Path

import h5py
import keras
import numpy as np

ATTENTION_PATTERN = r"(^|/)(query|value)$"
EVERY_DENSE_PATTERN = r".*"
ADAPTER_FILE = "lora.weights.h5"


def dense_layers(backbone):
    """{path: layer} of every `Dense` / `EinsumDense` layer inside `backbone`."""
    found = {}
    for layer in backbone._flatten_layers(include_self=False):   # every nested layer, the way Keras walks them
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            found[layer.path] = layer
    return found


def default_pattern(backbone):
    """The attention query / value projections if there are any, else every dense layer."""
    paths = dense_layers(backbone)
    return ATTENTION_PATTERN if any(re.search(ATTENTION_PATTERN, path) for path in paths) else EVERY_DENSE_PATTERN


def targets(backbone, pattern=None):
    """{path: layer} of the dense layers `pattern` selects (default: `default_pattern`).

    Raises:
        ValueError: the backbone has no dense layers at all (convolutional: Keras 3 has no
            LoRA for convolutions), or the pattern selects none (the message lists them).
    """
    layers = dense_layers(backbone)
    if not layers:
        raise ValueError(f"the backbone has no Dense or EinsumDense layers to adapt (a convolutional backbone: "
                         "Keras 3 has LoRA only for dense layers); fine-tune it without LoRA")
    pattern = default_pattern(backbone) if pattern is None else pattern
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{pattern!r} is not a regular expression ({error})") from None
    chosen = {path: layer for path, layer in layers.items() if regex.search(path)}
    if not chosen:
        names = sorted({path.rsplit("/", 1)[-1] for path in layers})
        raise ValueError(f"the pattern {pattern!r} matches none of the backbone's dense layers; their names: "
                         f"{', '.join(names)} (e.g. {next(iter(layers))})")
    return chosen


def adapt(backbone, rank, alpha=None, pattern=None):
    """Enable LoRA of `rank` (scaled by `alpha / rank`; default alpha = rank) on the chosen layers.

    Returns the {path: layer} adapted. Every other weight is untouched.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"the LoRA rank must be an integer of at least 1. Received: rank={rank!r}")
    chosen = targets(backbone, pattern)
    for layer in chosen.values():
        layer.enable_lora(rank, lora_alpha=alpha)
    return chosen


def lora_variables(model):
    """The LoRA matrices (`lora_kernel_a`, `lora_kernel_b`) of every adapted layer in `model`."""
    return [variable for layer in model._flatten_layers()
            if getattr(layer, "lora_enabled", False)
            for variable in (layer.lora_kernel_a, layer.lora_kernel_b)]


def train_adapters(model):
    """The LoRA phase: the head trains fully, the backbone only through its LoRA matrices.

    Setting `trainable` on a Keras layer sets it on each of its variables, so the backbone is
    made trainable (layers and variables), then every variable but the LoRA matrices is set
    non-trainable one by one; layers with running statistics (batch norm) stay in inference mode.
    """
    from headstart.models.freezing import unfreeze

    unfreeze(model.get_layer("head"), batch_norm="train")
    backbone = model.get_layer("backbone")
    unfreeze(backbone, batch_norm="frozen")
    adapters = {id(variable) for variable in lora_variables(backbone)}
    for variable in backbone.weights:
        if id(variable) not in adapters:
            variable.trainable = False


def save_adapter(backbone, path):
    """Write only the LoRA matrices, keyed by layer path, with each layer's rank and alpha.

    Written to a temporary name first, then moved into place: a run's files are whole or absent.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(temporary, "w") as file:
            for layer in backbone._flatten_layers():
                if getattr(layer, "lora_enabled", False):
                    group = file.create_group(layer.path)
                    group.attrs["rank"], group.attrs["alpha"] = int(layer.lora_rank), float(layer.lora_alpha)
                    group["lora_kernel_a"] = np.asarray(layer.lora_kernel_a)
                    group["lora_kernel_b"] = np.asarray(layer.lora_kernel_b)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def load_adapter(backbone, path):
    """Adapt `backbone` (the same base, without LoRA) as the file says and load its matrices.

    Raises:
        ValueError: the file names a layer the backbone does not have, or shapes differ.
    """
    layers = dense_layers(backbone)
    with h5py.File(path, "r") as file:
        entries = {}

        def collect(name, item):   # returns None, or visititems would stop at the first
            if isinstance(item, h5py.Group) and "lora_kernel_a" in item:
                entries[name] = item

        file.visititems(collect)
        missing = sorted(set(entries) - set(layers))
        if missing:
            raise ValueError(f"{path} adapts layers this backbone does not have: {', '.join(missing[:5])}")
        for name, group in entries.items():
            layer = layers[name]
            if not getattr(layer, "lora_enabled", False):
                alpha = float(group.attrs["alpha"])
                layer.enable_lora(int(group.attrs["rank"]), lora_alpha=int(alpha) if alpha.is_integer() else alpha)
            for key in ("lora_kernel_a", "lora_kernel_b"):
                value = group[key][()]
                variable = getattr(layer, key)
                if tuple(variable.shape) != value.shape:
                    raise ValueError(f"{path}: {name}/{key} has shape {value.shape}, the layer {tuple(variable.shape)}")
                variable.assign(value)
    return list(entries)


def copy_merged(source, target):
    """Copy `source`'s weights into `target`, the same architecture without LoRA, each adapter
    merged into its kernel: layer by layer through Keras' own `save_own_variables` (which merges,
    as `.keras` saving does) and `load_own_variables`.

    A LoRA layer made inside a KerasHub layer's `build` (ViT's attention projections) is rebuilt
    from the outer layer's config without LoRA, so a config copy of an adapted model has fewer
    weights than the model: this is how it gets them.
    """
    sources, targets_ = list(source._flatten_layers()), list(target._flatten_layers())
    pairs = list(zip(sources, targets_))
    mismatch = next(((a.name, b.name) for a, b in pairs if type(a) is not type(b)), None)
    if mismatch is not None or len(sources) != len(targets_):
        raise ValueError(f"copy_merged: the two models differ in their layers (first difference: {mismatch})")
    for layer, copy in pairs:
        store = {}
        layer.save_own_variables(store)
        copy.load_own_variables(store)
