"""The bad-input sweep: every verb refuses bad options in one clear line, exit 2, before any heavy work.

One table for every verb. Each case runs the real CLI in its own process, in a fresh
folder, and must:
- exit with status 2;
- print exactly one line on stderr, "headstart: error: ...", containing the case's words
  (what is wrong and, where there is one, the fix), and no traceback;
- print nothing on stdout (no progress output before the refusal);
- leave the folder as it was: nothing created, nothing changed (an existing run that is
  refused keeps its files byte for byte);
- not import TensorFlow, unless the check needs it: such cases say why in `needs_tf`.

Offline is made certain, not assumed: downloads are routed through a proxy on a closed
local port, which is what `headstart.recipes.network.is_online` checks, and Keras' weights cache
points to an empty folder.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# Runs the CLI, then says on stdout whether TensorFlow had been imported by then.
DRIVER = ("import sys, headstart.recipes.cli as cli; status = cli.main(sys.argv[1:]); "
          "print('TF' if 'tensorflow' in sys.modules else 'noTF'); sys.exit(status)")
# Verbs that write a run directory: each case gets `--runs-dir runs` (inside its folder) first.
RUN_VERBS = ("finetune", "pretrain", "lr-find", "semisupervised", "study", "tune", "rank-backbones")
# Subprocesses run side by side; a case importing TensorFlow takes a few seconds of CPU.
WORKERS = 4
# TensorFlow's native libraries write these lines to stderr while they load, before Python
# logging exists (TF_CPP_MIN_LOG_LEVEL does not silence them); nothing the CLI can avoid
# once it imports TensorFlow. Only cases that must import it are allowed them (see below).
TF_LOAD_NOISE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before "
                           r"absl::InitializeLog\(\) is called are written to STDERR$|To enable the following "
                           r"instructions: )")
# A local port nothing listens on (the discard port): "offline" in a second, on any machine.
CLOSED_PROXY = "http://127.0.0.1:9"

# ## Files some cases need, made in the case's folder before the snapshot.

def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def two_small_classes(folder):
    """images/cats, images/dogs: three images each."""
    for class_name in ("cats", "dogs"):
        for index in range(3):
            _png(folder / "images" / class_name / f"{index}.png", 40 * index)


def one_class(folder):
    _png(folder / "images" / "cats" / "0.png")


def empty_class(folder):
    two_small_classes(folder)
    (folder / "images" / "birds").mkdir()
    (folder / "images" / "birds" / "notes.txt").write_text("no images here")


def a_file(folder):
    (folder / "afile").write_text("a file, not a folder")


def unknown_weights_kind(folder):
    (folder / "model.pt").write_bytes(b"\x80\x02torch")


def corrupt_weights(folder):
    (folder / "bad.keras").write_bytes(b"this is not a zip archive")


def _preset_config(folder, backbone_class, config):
    """A KerasHub preset folder with only its config.json (what validation reads; no weights)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"module": "keras_hub.src.models", "class_name": backbone_class,
                                                    "registered_name": f"keras_hub>{backbone_class}",
                                                    "config": config}))


def tiny_vit_preset(folder):
    _preset_config(folder / "vit", "ViTBackbone", {"image_shape": [32, 32, 3], "patch_size": 8, "num_layers": 1,
                                                   "num_heads": 2, "hidden_dim": 8, "mlp_dim": 8})


def tiny_resnet_preset(folder):
    _preset_config(folder / "resnet", "ResNetBackbone", {
        "input_conv_filters": [64], "input_conv_kernel_sizes": [3], "stackwise_num_filters": [64],
        "stackwise_num_blocks": [1], "stackwise_num_strides": [1], "block_type": "basic_block",
        "image_shape": [None, None, 3]})


def empty_preset_folder(folder):
    (folder / "preset").mkdir()


def existing_run(recipe):
    def make(folder):
        run = folder / "runs" / recipe / "old"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text('{"test_accuracy": 0.9}\n')
        (run / "config.json").write_text('{"epochs": 3}\n')
    make.__name__ = f"existing_{recipe.replace('/', '_')}_run"
    return make


@dataclasses.dataclass(frozen=True)
class Case:
    """argv (one shell-like string), the words the error line must contain, and extras.

    needs_tf: why the check can only be made with TensorFlow imported (None: it must not be).
    setup: makes files in the case's folder before it runs.
    """

    argv: str
    words: tuple
    needs_tf: str | None = None
    setup: object = None


def case(argv, *words, needs_tf=None, setup=None):
    label = f"{argv} [{setup.__name__}]" if setup is not None else argv
    return pytest.param(Case(argv, words, needs_tf, setup), id=label)


CASES = [
    # ## The command line itself
    case("", "required", "VERB"),
    case("train", "invalid choice", "finetune"),
    case("finetune --bogus 1", "unrecognized arguments", "--bogus", "--help"),
    case("finetune --epochs two", "--epochs", "invalid int value"),
    case("finetune --strategy tpu", "--strategy", "invalid choice", "mirrored"),
    case("finetune --regularizer l1", "--regularizer", "invalid choice", "l2sp"),
    case("finetune --batch-norm maybe", "--batch-norm", "invalid choice", "frozen"),

    # ## finetune: numbers out of range
    case("finetune --epochs -1", "--epochs", "0 or more", "-1"),
    case("finetune --finetune-epochs -2", "--finetune-epochs", "0 or more"),
    case("finetune --pretrain-epochs 0", "--pretrain-epochs", "1 or more"),
    case("finetune --batch-size 0", "--batch-size", "1 or more"),
    case("finetune --lr 0", "--lr", "positive"),
    case("finetune --lr -0.1", "--lr", "positive"),
    case("finetune --finetune-lr nan", "--finetune-lr", "positive", "nan"),
    case("finetune --dropout 1", "--dropout", "[0, 1)"),
    case("finetune --weight-decay=-1e-4", "--weight-decay", "0 or more"),   # "=": argparse reads -1e-4 as a flag
    case("finetune --weight-decay -1e-4", "expected one argument", "--option=VALUE"),   # the fix for the above
    case("finetune --patience -1", "--patience", "0 or more"),
    case("finetune --image-size 0", "--image-size", "1 or more"),
    case("finetune --l2sp-alpha -1", "--l2sp-alpha", "0 or more"),
    case("finetune --head-units 64,x", "--head-units", "positive integers"),
    case("finetune --unfreeze 0", "--unfreeze", "1 or more"),
    case("finetune --layer-decay 1.5", "--layer-decay", "(0, 1]"),
    case("finetune --lr-groups stage3", "--lr-groups", "GROUP=MULTIPLIER"),
    case("finetune --gradual-unfreeze 0", "--gradual-unfreeze", "1 or more"),

    # ## finetune: KerasHub presets and LoRA
    case("finetune --backbone hub:vit_base_patch16_224_imagenett", "Unknown KerasHub preset", "did you mean",
         "vit_base_patch16_224_imagenet"),
    case("finetune --backbone hub:bert_base_en", "bert preset", "does not fine-tune", "image classification"),
    case("finetune --backbone hub:./preset", "no config.json", "save_to_preset", setup=empty_preset_folder),
    case("finetune --backbone hub:vit_base_patch16_224_imagenet", "not cached and cannot be downloaded",
         "on a machine with internet", "KAGGLEHUB_CACHE", "hub:/path/to/preset"),
    case("finetune --backbone hub:./vit --image-size 64", "at most 32x32", setup=tiny_vit_preset),
    case("finetune --backbone resnet8 --weights preset", "--weights preset", "KerasHub"),
    case("finetune --lora-rank 0", "--lora-rank", "1 or more"),
    case("finetune --lora-alpha 4", "--lora-rank"),
    case("finetune --lora-rank 2 --unfreeze stage3", "--lora-rank", "drop --unfreeze"),
    case("tune --lora-rank 2", "--lora-rank is for headstart finetune", "drop --lora-rank"),
    case("finetune --backbone hub:./vit --lora-rank 2 --lora-layers nothing", "matches none", "query, value",
         setup=tiny_vit_preset, needs_tf="layer paths are read off the backbone, built bare from the preset's config"),
    case("finetune --backbone hub:./resnet --image-size 32 --lora-rank 2", "no Dense or EinsumDense layers",
         "LoRA only for dense layers", setup=tiny_resnet_preset,
         needs_tf="the dense layers are read off the backbone, built bare from the preset's config"),

    # ## finetune: unknown names, missing files
    case("finetune --backbone resnet9", "Unknown backbone", "did you mean", "resnet8", "headstart list backbones"),
    case("finetune --backbone mobilenet_v2 --weights none --image-size 16", "mobilenet_v2", "at least 32x32"),
    case("finetune --weights digits-source --backbone mobilenet_v2", "digits-source", "own backbones",
         "--weights imagenet"),
    case("finetune --weights imagenet", "resnet8", "no ImageNet weights", "--weights PATH"),
    case("finetune --backbone mobilenet_v2 --weights imagenet", "ImageNet weights for mobilenet_v2",
         "cannot be downloaded", "on a machine with internet", "--weights PATH"),
    case("finetune --weights missing.keras", "weights file does not exist", "missing.keras"),
    case("finetune --weights model.pt", "Weights must be", ".keras", setup=unknown_weights_kind),
    case("finetune --weights bad.keras --image-size 16", "bad.keras", setup=corrupt_weights,
         needs_tf="only Keras can tell whether a .keras file holds a model"),
    case("finetune --weights none --unfreeze stage9", "--unfreeze stage9", "stage1, stage2, stage3",
         needs_tf="block names are read off the backbone, built bare at its smallest size"),
    case("finetune --data no_such_folder", "no_such_folder", "does not exist", "sub-folder per class"),
    case("finetune --data mnist", "does not exist", "Did you mean 'tfds:mnist'?"),
    case("finetune --data weird:thing", "Unknown data source kind", "'weird'"),
    case("finetune --data images --classes source", "preset of the digits", "name the classes",
         setup=two_small_classes),
    case("finetune --data images", "at least 2 classes", "only 'cats'", setup=one_class),
    case("finetune --data images", "'birds'", "hold no", "add images or remove the folder", setup=empty_class),
    case("finetune --data images --classes cats,dogs --labels-per-class 5", "more than the", "training images",
         "ask for at most", setup=two_small_classes),
    case("finetune --labels-per-class 1000", "more than the", "training images", "ask for at most"),
    case("finetune --labels-per-class 0", "labels_per_class", "positive integer"),
    case("finetune --classes 5,11", "Unknown class", "'11'", "its classes are"),
    case("finetune --classes 7", "at least 2 different classes"),
    case("finetune --augment flip,blur", "augment", "blur", "flip, rotation, zoom, contrast"),
    case("finetune --data tfds:no_such_dataset", "Unknown TFDS dataset", "headstart list datasets"),
    case("finetune --data tfds:mnist", "not prepared", "cannot be downloaded", "--data-dir"),
    case("finetune --data tfds:mnist --data-dir missing_dir", "not prepared in", "missing_dir", "--data-dir"),
    case("finetune --data tfds:mnist --data-dir afile", "--data-dir", "afile", "not a folder", setup=a_file),
    case("finetune --cache-dir afile/features", "--cache-dir", "cannot write there", setup=a_file),

    # ## finetune: the run directory, --resume
    case("finetune --name old", "already exists", "another --name", "--overwrite", setup=existing_run("finetune")),
    case("finetune --name a/b", "--name", "not a usable folder name"),
    case("finetune --name ..", "--name", "not a usable folder name"),
    case("finetune --runs-dir afile", "--runs-dir", "cannot write there", setup=a_file),
    case("finetune --resume", "--resume needs the --name"),
    case("finetune --resume --name never_started", "no run", "never_started", "run without --resume"),
    case("finetune --resume --overwrite --name old", "--resume", "--overwrite", "pass one of them",
         setup=existing_run("finetune")),
    case("finetune --resume --name old", "--resume", "already finished", "another --name",
         setup=existing_run("finetune")),

    # ## pretrain
    case("pretrain --model mobilenet_v2", "keras.applications", "resnet8"),
    case("pretrain --model resnet9", "Unknown backbone", "resnet8"),
    case("pretrain --epochs -3", "--epochs", "0 or more"),
    case("pretrain --augment blur", "augment", "flip, rotation"),
    case("pretrain --name old", "already exists", "--overwrite", setup=existing_run("pretrain")),
    case("pretrain --resume --name never_started", "no run", "run without --resume"),

    # ## lr-find: its own options first, then every finetune option
    case("lr-find --start 0", "--start", "positive"),
    case("lr-find --end inf", "--end", "positive"),
    case("lr-find --start 1 --end 0.1", "--start 1 must be below --end 0.1"),
    case("lr-find --scan-steps 2", "--scan-steps", "5 or more"),
    case("finetune --epochs 3 --steps 30", "give --epochs or --steps, not both"),
    case("finetune --label-smoothing 1", "--label-smoothing", "[0, 1)"),
    case("finetune --mixup -1", "mixup", "Beta"),
    case("finetune --precision float64", "--precision", "invalid choice", "mixed_float16"),
    case("lr-find --phase middle", "--phase", "invalid choice", "finetune"),
    case("lr-find --epochs -1", "--epochs", "0 or more"),
    case("lr-find --weights none --lr-groups stage9=0.5", "--lr-groups", "stage9", "stage3",
         needs_tf="group names are read off the backbone, built bare at its smallest size"),
    case("lr-find --name old", "already exists", "--overwrite", setup=existing_run("lr-find")),

    # ## semisupervised
    case("semisupervised --labels-per-class 1,x", "--labels-per-class", "comma list of positive integers"),
    case("semisupervised --labels-per-class 0", "--labels-per-class", "positive integers"),
    case("semisupervised --labels-per-class 1,500", "500", "more than the", "ask for at most"),
    case("semisupervised --image-size 10", "--image-size", "multiple of 4"),
    case("semisupervised --latent-dim 0", "--latent-dim", "1 or more"),
    case("semisupervised --autoencoder-epochs 0", "--autoencoder-epochs", "1 or more"),
    case("semisupervised --lr nan", "--lr", "positive"),
    case("semisupervised --data no_such_folder", "does not exist"),
    case("semisupervised --data tfds:no_such_dataset", "Unknown TFDS dataset"),
    case("semisupervised --runs-dir afile", "--runs-dir", "cannot write there", setup=a_file),
    case("semisupervised --name old", "already exists", "--overwrite", setup=existing_run("semisupervised")),
    case("semisupervised --resume", "--resume needs the --name"),
    case("semisupervised --resume --name old", "already finished", setup=existing_run("semisupervised")),

    # ## tune: the search's own options are checked before finetune's
    case("tune --lr 1e-2:1e-5", "--lr", "inverted", "LOW:HIGH"),
    case("tune --lr 0:1e-2", "--lr", "log-scale", "above 0"),
    case("tune --lr 1e-3|x", "--lr", "'x'", "not a number"),
    case("tune --dropout 0.2:1.5", "--dropout", "[0, 1)"),
    case("tune --tuner foo", "--tuner", "'foo'", "hyperband, bayesian, random, grid"),
    case("tune --objective foo", "--objective", "'foo'", "val_accuracy"),
    case("tune --max-trials 0", "--max-trials", "1 or more"),
    case("tune --hyperband-factor 1", "--hyperband-factor", "2 or more"),
    case("tune --epochs 0 --finetune-epochs 0", "at least one epoch"),
    case("tune --backbone resnet9", "Unknown backbone", "resnet8"),
    case("tune --resume", "--resume needs the --name"),
    case("tune --resume --name never_started", "no run", "run without --resume"),
    case("tune --resume --name old", "--resume", "no search to continue", setup=existing_run("tune")),
    case("tune --name old", "already exists", "--overwrite", setup=existing_run("tune")),
    case("tune --population 0", "--population", "1 or more"),
    case("tune --population 4", "--population 4", "--finetune-epochs 0"),
    case("tune --population 4 --finetune-epochs 0 --tuner hyperband", "--population 4", "round by round", "random"),
    case("tune --population 4 --finetune-epochs 0 --tuner random", "--augment rotation,zoom", "--augment none"),
    case("tune --phases finetune,head", "--phases", "out of order", "head,finetune"),
    case("tune --phases head", "--phases", "both phases", "--finetune-epochs 0"),
    case("tune --head-trials 5", "--head-trials", "--phases head,finetune"),
    case("tune --phases head,finetune --head-trials 0", "--head-trials", "1 or more"),

    # ## list and study
    case("list", "required", "what"),
    case("list optimizers", "invalid choice", "backbones"),
    case("study", "name a study", "--list", "exploding-products"),
    case("study no-such-study", "unknown study", "known studies", "symmetry"),
    case("study symmetry --seed -1", "--seed", "0 or more"),
    case("study learning-rate --seed -1", "--seed", "0 or more"),   # its module imports Keras: checked first
    case("study symmetry --name a/b", "--name", "not a usable folder name"),
    case("study learning-rate --name old", "already exists", "--overwrite",
         setup=existing_run("study/learning-rate")),

    # ## evaluate, predict, export: a finished run's model (recipes/trained.py finds it without TensorFlow)
    case("evaluate runs/finetune/none", "is not a run folder"),
    case("evaluate runs/finetune/old", "holds no model", setup=existing_run("finetune")),
    case("evaluate runs", "not a finished run", "no config.json or metrics.json", setup=existing_run("finetune")),
    case("evaluate runs/finetune/old/model.keras", "does not exist", setup=existing_run("finetune")),
    case("evaluate runs/finetune/old --split everything", "--split", "invalid choice"),
    case("predict runs/finetune/none photo.jpg", "is not a run folder"),
    case("predict runs/finetune/old photo.jpg", "holds no model", setup=existing_run("finetune")),
    case("predict runs/finetune/old", "required", "PATH"),
    case("export runs/finetune/none --format onnx", "is not a run folder"),
    case("export runs/finetune/old --format onnx", "holds no model", setup=existing_run("finetune")),
    case("export runs/finetune/old --format coreml", "--format", "invalid choice", "litert"),
    case("export runs/finetune/old --format saved_model --quantize int8", "float32 only", "litert"),
    case("export runs/finetune/old --format litert --min-accuracy 1.5", "--min-accuracy", "[0, 1]"),

    # ## rank-backbones
    case("rank-backbones --backbones ,", "at least one backbone"),
    case("rank-backbones --backbones resnet8,no_such_net", "unknown backbone", "no_such_net"),
    case("rank-backbones --backbones mobilenet_v2:digits-source", "digits-source", "mobilenet_v2"),
    case("rank-backbones --neighbours 0", "--neighbours", "1 or more"),
    case("rank-backbones --name old", "already exists", "--overwrite", setup=existing_run("rank-backbones")),

    # ## Reliability II: what fails only after work, found before it
    case("finetune --steps 0 --finetune-steps 0", "both 0", "nothing would be trained"),
    case("pretrain --epochs 0", "--epochs 0", "at least one epoch"),
    case("finetune --image-size 300000", "--image-size 300000", "GiB", "smaller --image-size"),
    case("finetune --weights none --unfreeze 500", "--unfreeze 500", "top_layers",
         needs_tf="the layer count is read off the backbone, built bare at its smallest size"),

    # ## Reliability II: what the operating system refuses, found before any work
    case("pretrain --runs-dir /proc/headstart", "--runs-dir", "cannot write there"),
    case("finetune --cache-dir /proc/headstart", "--cache-dir", "cannot write there"),
    case("pretrain --name " + "x" * 300, "--name", "File name too long", "shorter --name"),
    case("pretrain --resume --name " + "x" * 300, "--resume", "no run"),
    case("finetune --runs-dir afile/runs", "--runs-dir", "cannot write there", setup=a_file),
]


# ## Running the cases: every selected case once, a few side by side.

@dataclasses.dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def snapshot(folder):
    """Every path under `folder` with its file's bytes hashed and its modification time."""
    tree = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_file():
            tree[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            tree[relative] = "folder"
    return tree


def run_case(case, folder, keras_home):
    if case.setup is not None:
        case.setup(folder)
    argv = shlex.split(case.argv)
    if argv and argv[0] in RUN_VERBS:
        argv = [argv[0], "--runs-dir", "runs", *argv[1:]]  # a later --runs-dir in the case wins
    environment = {key: value for key, value in os.environ.items() if key.lower() != "no_proxy"}
    environment.update(HTTPS_PROXY=CLOSED_PROXY, https_proxy=CLOSED_PROXY, KERAS_HOME=str(keras_home),
                       KAGGLEHUB_CACHE=str(keras_home),   # an empty cache: no KerasHub preset is here
                       CUDA_VISIBLE_DEVICES="")
    before = snapshot(folder)
    completed = subprocess.run([sys.executable, "-c", DRIVER, *argv], cwd=folder, env=environment,
                               capture_output=True, text=True)
    return Outcome(completed.returncode, completed.stdout, completed.stderr, before, snapshot(folder))


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Runs the module's selected cases in parallel; returns {case: Future[Outcome]}."""
    selected = {item.callspec.params["bad"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "bad" in item.callspec.params}
    keras_home = tmp_path_factory.mktemp("empty_keras_home")
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {bad: pool.submit(run_case, bad, tmp_path_factory.mktemp("case"), keras_home)
                   for bad in selected}
        yield futures
        for future in futures.values():
            future.cancel()


def _stderr_lines(outcome, tf_allowed):
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    return [line for line in lines if not TF_LOAD_NOISE.match(line)] if tf_allowed else lines


def _tf_marker(outcome):
    lines = outcome.stdout.splitlines()
    return lines[-1] if lines else None


@pytest.mark.parametrize("bad", CASES)
def test_refused_in_one_line_with_exit_2_writing_nothing(bad, outcomes):
    outcome = outcomes[bad].result()
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.stderr
    assert outcome.status == 2, outcome.stderr
    imported_tf = _tf_marker(outcome) == "TF"
    lines = _stderr_lines(outcome, tf_allowed=imported_tf)
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("headstart: error: "), lines[0]
    missing = [word for word in bad.words if word not in lines[0]]
    assert not missing, f"{lines[0]!r} lacks {missing}"
    assert outcome.stdout.splitlines()[:-1] == [], "printed before refusing: " + outcome.stdout
    assert outcome.after == outcome.before, "the refusal created or changed files"


# The same runs, for the cases whose check needs no TensorFlow: it must not be imported. The
# backbone checks (names, sizes, weights files, ImageNet offline) read `headstart.models.backbone_specs`.
NO_TF_CASES = [pytest.param(param.values[0], id=param.id)
               for param in CASES if param.values[0].needs_tf is None]


@pytest.mark.parametrize("bad", NO_TF_CASES)
def test_refused_before_tensorflow_is_imported(bad, outcomes):
    outcome = outcomes[bad].result()
    assert outcome.status == 2, outcome.stderr
    assert _tf_marker(outcome) == "noTF", "TensorFlow was imported before this check"


def test_the_table_covers_every_verb_with_enough_cases():
    from headstart.recipes.cli import VERBS

    verbs = {param.values[0].argv.split()[0] for param in CASES if param.values[0].argv}
    assert set(VERBS) <= verbs, f"no bad-input case for {sorted(set(VERBS) - verbs)}"
    assert len(CASES) >= 35


def test_the_readme_states_the_tables_size():
    """The README's "Bad input" section counts this table; a row added here must be counted there."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    with_tensorflow = sum(1 for param in CASES if param.values[0].needs_tf)
    assert f"runs {len(CASES)} such cases" in readme
    assert f"{with_tensorflow} cases are the exception" in readme
