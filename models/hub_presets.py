"""KerasHub presets as backbones: `--backbone hub:NAME` or `--backbone hub:/path/to/preset`.

Keras-free on purpose, like `headstart.models.backbone_specs`: the preset is found and its
`config.json` read before TensorFlow starts, so an unknown preset, an unsupported task or a
preset that is not here (and cannot be downloaded) is answered in a second.

    from headstart.models import hub_presets
    preset = hub_presets.resolve("hub:vit_base_patch16_224_imagenet")   # UsageError if unusable
    preset.family, preset.backbone_class, preset.folder, preset.image_size

Where a preset is looked for:
- `hub:/path/to/preset` (or `hub:./folder`): a local preset folder, as
  `keras_hub.models.Backbone.save_to_preset` writes it (`config.json`, `model.weights.h5`,
  optionally `image_converter.json`).
- `hub:NAME`: KerasHub's own preset list (read from KerasHub's `*_presets.py` tables, plain
  Python dicts, without importing KerasHub), then the kagglehub cache that `from_preset`
  downloads into: `$KAGGLEHUB_CACHE/models/OWNER/MODEL/keras/NAME/VERSION`
  (`KAGGLEHUB_CACHE` defaults to `~/.cache/kagglehub`). Not cached and offline: a one-line
  error with the command that fetches it on a machine with internet.
"""

import dataclasses
import difflib
import functools
import importlib.util
import json
import os
import runpy
from pathlib import Path

from headstart.recipes.errors import UsageError

PREFIX = "hub:"
CONFIG_FILE = "config.json"
IMAGE_CONVERTER_FILE = "image_converter.json"
KAGGLE_PREFIX = "kaggle://"

# The image backbones headstart fine-tunes: KerasHub backbone class -> (family, kind). A
# "transformer" outputs tokens (the class token is the feature vector) and has LoRA targets;
# a "conv" family outputs a feature map, which the head pools. Others are refused: their
# outputs (text features, detection pyramids) are not what a classification head takes.
SUPPORTED = {
    "ViTBackbone": ("vit", "transformer"),
    "ResNetBackbone": ("resnet", "conv"),
    "EfficientNetBackbone": ("efficientnet", "conv"),
}


@dataclasses.dataclass(frozen=True)
class HubPreset:
    """A preset found here: its folder (None when it must still be downloaded) and what its config says."""

    name: str                 # what followed `hub:`
    handle: str | None        # kaggle://... for a named preset, None for a local folder
    folder: Path | None       # the local or cached preset folder; None if not downloaded yet
    backbone_class: str | None
    config: dict | None       # the backbone's constructor arguments (config.json's "config")
    scaling: tuple | None = None   # (scale, offset) given directly, instead of the converter file

    @property
    def family(self):
        return SUPPORTED[self.backbone_class][0] if self.backbone_class in SUPPORTED else None

    @property
    def kind(self):
        return SUPPORTED[self.backbone_class][1] if self.backbone_class in SUPPORTED else None

    @property
    def image_size(self):
        """The side the preset's config fixes (ViT: its position embeddings), else None (any size)."""
        shape = (self.config or {}).get("image_shape") or (self.config or {}).get("input_shape")
        if self.kind == "transformer" and shape and shape[0]:
            return int(shape[0])
        return None

    def image_scaling(self):
        """(scale, offset) the preset's image converter applies to pixels in [0, 255]: KerasHub's
        `ImageConverter` computes `pixels * scale + offset`. Without a converter file: (1/255, None)."""
        if self.scaling is not None:
            return self.scaling
        if self.folder is None or not (self.folder / IMAGE_CONVERTER_FILE).is_file():
            return 1 / 255.0, None
        config = _read_json(self.folder / IMAGE_CONVERTER_FILE).get("config", {})
        return config.get("scale"), config.get("offset")


def is_hub_name(name):
    return isinstance(name, str) and name.startswith(PREFIX)


def kagglehub_cache():
    """kagglehub's cache folder: `$KAGGLEHUB_CACHE`, else `~/.cache/kagglehub` (as kagglehub.config)."""
    return Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")


@functools.cache
def builtin_presets():
    """{preset name: (family, kaggle handle)} of every KerasHub preset, from KerasHub's own tables
    (`keras_hub/src/models/FAMILY/*_presets.py`, dicts with no imports), read without importing it."""
    spec = importlib.util.find_spec("keras_hub")   # finds the package without importing it (no Keras)
    if spec is None or not spec.submodule_search_locations:
        return {}
    models = Path(list(spec.submodule_search_locations)[0]) / "src" / "models"
    presets = {}
    for path in sorted(models.glob("*/*_presets.py")):
        try:
            table = runpy.run_path(str(path)).get("backbone_presets", {})
        except Exception:   # a table that is not plain data: its presets are not offered
            continue
        for name, entry in table.items():
            if isinstance(entry, dict) and "kaggle_handle" in entry:
                presets[name] = (path.parent.name, entry["kaggle_handle"])
    return presets


def _supported_family(family):
    return family in {fam for fam, _ in SUPPORTED.values()}


def families():
    """[(family, kind, number of presets)] of the hub families `--backbone hub:...` supports."""
    counts = {}
    for family, _ in builtin_presets().values():
        if _supported_family(family):
            counts[family] = counts.get(family, 0) + 1
    return [(family, kind, counts.get(family, 0)) for family, kind in SUPPORTED.values()]


def cached_folder(handle):
    """The kagglehub cache folder of `kaggle://OWNER/MODEL/FRAMEWORK/VARIATION/VERSION`."""
    parts = handle[len(KAGGLE_PREFIX):].split("/")
    return kagglehub_cache().joinpath("models", *parts)


def resolve(backbone, require_local=False):
    """The `HubPreset` of `--backbone hub:...`; raises `UsageError` if it cannot be used here.

    Args:
        backbone: `"hub:NAME"` or `"hub:/path/to/preset"`.
        require_local: refuse a preset that is neither a folder nor cached, whatever the
            network (the check offline machines need). Defaults to `False`: then the network
            is asked, and a reachable one leaves the download to KerasHub.
    """
    name = backbone[len(PREFIX):]
    if not name:
        raise UsageError("--backbone hub: needs a preset name or folder, e.g. hub:vit_base_patch16_224_imagenet "
                         "or hub:/path/to/preset (`headstart list backbones` lists the hub families)")
    if "/" in name or name.startswith("."):
        return _local(name)
    presets = builtin_presets()
    if name in presets and not _supported_family(presets[name][0]):
        raise UsageError(f"--backbone hub:{name}: a KerasHub {presets[name][0]} preset, which headstart does not "
                         f"fine-tune (image classification backbones only: families "
                         f"{', '.join(family for family, _ in SUPPORTED.values())})")
    if name not in presets:
        supported = [preset for preset, (family, _) in presets.items() if _supported_family(family)]
        close = difflib.get_close_matches(name, supported, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UsageError(f"Unknown KerasHub preset {name!r} for an image backbone; {hint}supported families: "
                         f"{', '.join(family for family, _ in SUPPORTED.values())} (`headstart list backbones`; "
                         "KerasHub's presets of these families are listed at keras.io/keras_hub/presets)")
    family, handle = presets[name]
    folder = cached_folder(handle)
    if (folder / CONFIG_FILE).is_file():
        return _from_folder(name, handle, folder)
    if require_local or not _online():
        raise UsageError(unavailable_message(name, handle))
    backbone_class = next(cls for cls, (fam, _) in SUPPORTED.items() if fam == family)
    return HubPreset(name, handle, None, backbone_class, None)


def unavailable_message(name, handle):
    command = f"python -c \"import keras_hub; keras_hub.models.Backbone.from_preset('{name}')\""
    return (f"KerasHub preset {name} is not cached and cannot be downloaded (no network): on a machine with "
            f"internet run `{command}` and copy its {kagglehub_cache().name} cache folder "
            f"(models/{handle[len(KAGGLE_PREFIX):]}) into {kagglehub_cache()} here (or point KAGGLEHUB_CACHE at "
            f"it), or pass the preset folder as --backbone hub:/path/to/preset")


def _online():
    from headstart.recipes import network   # looked up at call time, so tests can fake the answer

    return network.is_online("www.kaggle.com")


def _local(name):
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--backbone hub:{name}: no such preset folder; pass a folder written by KerasHub's "
                         "save_to_preset (with a config.json) or a preset name")
    if not (folder / CONFIG_FILE).is_file():
        raise UsageError(f"--backbone hub:{name}: the folder has no {CONFIG_FILE}, so it is not a KerasHub preset; "
                         "pass a folder written by KerasHub's save_to_preset")
    return _from_folder(name, None, folder)


def _from_folder(name, handle, folder):
    config = _read_json(folder / CONFIG_FILE)
    backbone_class = config.get("class_name")
    if backbone_class not in SUPPORTED:
        raise UsageError(f"--backbone hub:{name}: a {backbone_class or 'non-backbone'} preset, which headstart does "
                         f"not fine-tune (image classification backbones only: "
                         f"{', '.join(sorted(SUPPORTED))})")
    return HubPreset(name, handle, folder, backbone_class, config.get("config", {}))


def _read_json(path):
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is not a readable KerasHub preset file ({error}); fetch the preset again")


def saved_with_hub(path):
    """Whether the `.keras` file at `path` holds a KerasHub backbone (its config names our hub layers)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return b"headstart.models.hub_backbones" in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
