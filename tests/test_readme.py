"""Every command and every Python block of README.md runs, so an example can never rot.

The blocks are read from README.md at test time; each fence says what it holds:

    ```sh          commands to run, in README order, in one scratch folder
    ```python      Python to run there (in-process, a fresh namespace)
    ```text        printed output; a `$ COMMAND` line in it is run, and the lines under it
                   are what it must print (numbers and paths may differ)
    ```sh skip-ci: REASON    (any kind) not run here, for the reason shown in the README

A fence without one of these fails `test_every_block_says_what_it_holds`.

How a block runs, the same for every block (nothing below names a README command):
- The blocks run in README order in one scratch folder, so a later command finds what an
  earlier one wrote (`runs/tune/search1`); a `runs/VERB/NAME/FILE` placeholder is the
  newest run of that verb holding FILE. A session fixture pretrains the one tiny digits
  backbone every `--weights digits-source` run reuses.
- `headstart VERB ...` runs in-process through `headstart.recipes.cli.main` (its exit status
  and output are those of the command line), with the verb's `TINY` options appended, so
  the real code path runs at a tiny size; `...` in a command ("your other options") is
  dropped. A `--data ./FOLDER` that does not exist is made: a tiny folder of images. A
  `--backbone hub:...` command keeps its own `--image-size` (a ViT preset takes only its own).
- The machine is offline (`network.is_online` answers no, `KERAS_HOME` and `KAGGLEHUB_CACHE`
  are empty): a command that needs the internet (`--weights imagenet`, `tfds:`, a KerasHub
  preset by name, `hub:NAME`) must fail at once, exit 2, with
  the one-line offline message; it runs as written (no tiny options: it must not get as
  far as training).
- A command whose comment says it is `killed` is interrupted (KeyboardInterrupt, as Ctrl-C)
  right after its first saved checkpoint; the next command resumes it.
- A block with environment assignments or `&` background jobs runs as a bash script in a
  subprocess (each process its own TensorFlow), with 127.0.0.1 and free ports for the
  addresses and ports it names.
- An install chain (`python3 -m venv .venv && . .venv/bin/activate && pip install ... &&
  CMD`) is not reinstalled: its install steps must be the ones `.ci/run` runs, and CMD
  runs; the README's test command must be exactly what `.ci/run` runs (and is not run
  from inside the tests).
"""

import contextlib
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from headstart.recipes import network
from headstart.recipes.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
KINDS = ("sh", "python", "text")
SKIP = "skip-ci:"

# Appended to every command of the verb: the README's command at a tiny size (the last
# value of an option wins, so these replace the README's own sizes and budgets). No scratch
# baseline and one trial: each `fit` costs seconds of tracing, and tests/test_finetune_cli.py
# and tests/test_tune.py run those paths already.
TINY = {
    "finetune": ["--image-size", "8", "--steps", "2", "--finetune-steps", "2", "--pretrain-epochs", "1",
                 "--no-compare-scratch"],
    "pretrain": ["--image-size", "8", "--epochs", "1"],
    "tune": ["--image-size", "8", "--epochs", "1", "--finetune-epochs", "1", "--pretrain-epochs", "1",
             "--max-trials", "1"],
    "lr-find": ["--image-size", "8", "--steps", "2", "--pretrain-epochs", "1", "--scan-steps", "5"],
    "semisupervised": ["--image-size", "8", "--autoencoder-epochs", "1", "--epochs", "1", "--finetune-epochs", "1",
                       "--labels-per-class", "1"],
    "study": ["--quick"],
    "rank-backbones": ["--image-size", "8", "--pretrain-epochs", "1"],
}
# finetune and lr-find take a phase's budget in steps or in epochs, not both: a command
# that gives it in epochs gets the same tiny budget in epochs.
TINY_IN_EPOCHS = {
    "finetune": ["--image-size", "8", "--epochs", "1", "--finetune-epochs", "1", "--pretrain-epochs", "1",
                 "--no-compare-scratch"],
    "lr-find": ["--image-size", "8", "--epochs", "1", "--pretrain-epochs", "1", "--scan-steps", "5"],
}
# Python blocks: every `...epochs=N` keyword becomes 1, every `..._steps=N` 2 (the same tiny budget).
TINY_PYTHON = [(re.compile(r"\b(\w*epochs)=\d+"), r"\1=1"), (re.compile(r"\b(\w*_steps)=\d+"), r"\1=2")]


def tiny(verb, words):
    """The verb's TINY options for a command of `words`, in the budget unit the command uses.

    A `hub:` backbone keeps the command's image size: a ViT preset takes only its own (its
    position embeddings), and the README's local presets are tiny already."""
    in_epochs = any(word.split("=")[0] in ("--epochs", "--finetune-epochs") for word in words)
    options = TINY_IN_EPOCHS[verb] if in_epochs and verb in TINY_IN_EPOCHS else TINY.get(verb, [])
    if any(word.startswith("hub:") for word in words) and "--image-size" in options:
        at = options.index("--image-size")
        options = options[:at] + options[at + 2:]
    return options
OFFLINE_MESSAGE = ("cannot be downloaded", "on a machine with internet")
INSTALL = re.compile(r"^(python3? -m venv |\. \S+/bin/activate$|pip install )")
PLACEHOLDER = re.compile(r"runs/([\w-]+)/NAME/([\w.]+)")


@dataclass
class Block:
    line: int        # of the opening fence, 1-based
    info: str        # the fence's info string
    text: str
    section: str

    @property
    def kind(self):
        return self.info.split()[0] if self.info else ""

    @property
    def skip_reason(self):
        return self.info.partition(SKIP)[2].strip() if SKIP in self.info else None

    @property
    def id(self):
        return f"line{self.line}-{self.kind or 'unmarked'}"


def readme_blocks(text=None):
    """The fenced blocks of README.md, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, section, opening = [], "", None
    for number, line in enumerate(lines, 1):
        if opening is None:
            if line.startswith("```"):
                opening, body = (number, line[3:].strip()), []
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif line.strip() == "```":
            blocks.append(Block(opening[0], opening[1], "\n".join(body), section))
            opening = None
        else:
            body.append(line)
    assert opening is None, f"README.md: the fence opened at line {opening[0]} is never closed"
    return blocks


def logical_lines(text):
    """Lines with `\\` continuations joined; blank and comment-only lines left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def ci_commands():
    """What .ci/run runs after going to the repository root: its command lines."""
    commands = []
    for line in CI_RUN.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "set ", "cd ")):
            commands.append(line)
    return commands


BLOCKS = readme_blocks()
RUNNABLE = [block for block in BLOCKS if block.skip_reason is None and block.kind in KINDS
            and (block.kind != "text" or any(line.startswith("$ ") for line in block.text.splitlines()))]


# ## The README's marks and the CI command

def test_every_block_says_what_it_holds():
    problems = []
    for block in BLOCKS:
        if block.kind not in KINDS:
            problems.append(f"line {block.line}: fence {block.info!r}: mark it ```sh, ```python or ```text")
        if SKIP in block.info and not block.skip_reason:
            problems.append(f"line {block.line}: {SKIP} needs a reason in the README")
    assert not problems, "README.md blocks the tests cannot tell apart:\n" + "\n".join(problems)
    assert RUNNABLE, "no runnable block found in README.md"


def test_the_readme_test_command_is_what_ci_runs():
    chains = [line for block in BLOCKS if block.kind == "sh" for line in logical_lines(block.text)
              if "pytest" in line]
    assert len(chains) == 1, f"expected one test command in README.md, found {chains}"
    assert chains[0].split(" && ") == ci_commands()
    # The other install chains install as CI does (the extras aside).
    ci_installs = {re.sub(r'"?\.\[\w+\]"?', ".", command) for command in ci_commands() if INSTALL.match(command)}
    for block in BLOCKS:
        if block.kind == "sh":
            for line in logical_lines(block.text):
                for step in line.split(" && ")[:-1]:
                    if INSTALL.match(step):
                        assert re.sub(r'"?\.\[\w+\]"?', ".", step) in ci_installs, (block.line, step)


def test_the_parser_reads_info_strings_markers_and_continuations():
    text = "# A\n```sh\nheadstart x \\\n   --y 1  # why\n# only a comment\n```\n## B\n```text skip-ci: no\n$ a\n```\n"
    first, second = readme_blocks(text)
    assert (first.kind, first.section, first.line, first.skip_reason) == ("sh", "A", 2, None)
    assert logical_lines(first.text) == ["headstart x  --y 1  # why"]
    assert (second.kind, second.section, second.skip_reason) == ("text", "B", "no")
    assert readme_blocks("```\nx\n```\n")[0].kind == ""   # unmarked: fails the test above


# ## Running the blocks

@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """The scratch folder every block runs in, with the tiny digits backbone pretrained once."""
    from headstart.recipes import finetune
    from headstart.recipes.cli import build_parser

    folder = tmp_path_factory.mktemp("readme")
    args = build_parser().parse_args(["finetune", *TINY["finetune"], "--runs-dir", str(folder / "runs")])
    with contextlib.redirect_stdout(sys.stderr):
        finetune.pretrained_digits_backbone(args)
    return folder


@pytest.fixture
def offline_in(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    monkeypatch.setenv("KERAS_HOME", str(workspace / "keras_home"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(workspace / "kagglehub"))   # no KerasHub preset cached
    return workspace


def needs_network(argv):
    """`--weights imagenet`, a `tfds:` data set, or a KerasHub preset by name (`hub:NAME`, not a folder)."""
    return "imagenet" in argv or any(arg.startswith("tfds:") or (arg.startswith("hub:") and "/" not in arg)
                                     for arg in argv)


def fill_placeholders(text, workspace):
    """`runs/VERB/NAME/FILE`: the newest run of VERB that holds FILE."""
    def newest(match):
        verb, file = match.groups()
        candidates = sorted((workspace / "runs" / verb).glob(f"*/{file}"), key=lambda path: path.stat().st_mtime)
        assert candidates, f"{match.group(0)}: no earlier command made a runs/{verb}/*/{file}"
        return str(candidates[-1].relative_to(workspace))

    return PLACEHOLDER.sub(newest, text)


def make_missing_folders(argv, workspace):
    from test_data import make_image_folder

    for option, value in zip(argv, argv[1:]):
        if option == "--data" and value.startswith(("./", "../")) and not (workspace / value).exists():
            make_image_folder(workspace / value, per_class=5, size=10)


@contextlib.contextmanager
def interrupted_after_first_checkpoint(monkeypatch):
    """Ctrl-C right after the run saved its first checkpoint (an epoch completed)."""
    from headstart.recipes.checkpoint import TrainingCheckpoint

    save = TrainingCheckpoint.save

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(TrainingCheckpoint, "save", save)


def headstart_argv(command):
    """`headstart VERB ...` or `python -m headstart VERB ...` as argv after the program, else None."""
    words = [word for word in shlex.split(command, comments=True) if word != "..."]
    if words[:1] == ["headstart"]:
        return words[1:]
    if words[:3] in (["python", "-m", "headstart"], ["python3", "-m", "headstart"]):
        return words[3:]
    return None


def run_command(command, workspace, capsys, monkeypatch):
    """Run one README command in-process; returns (status, stdout, stderr)."""
    argv = headstart_argv(command)
    assert argv is not None, f"not a headstart command, so this harness cannot run it: {command!r}"
    make_missing_folders(argv, workspace)
    offline = needs_network(argv)
    if not offline:
        argv += tiny(argv[0], argv)
    capsys.readouterr()
    if "killed" in command.partition("#")[2]:
        with interrupted_after_first_checkpoint(monkeypatch):
            main(argv)
        captured = capsys.readouterr()
        return None, captured.out, captured.err
    status = main(argv)
    captured = capsys.readouterr()
    if offline:
        stderr = captured.err.strip()
        assert status == 2 and len(stderr.splitlines()) == 1, (command, status, stderr)
        assert all(words in stderr for words in OFFLINE_MESSAGE), (command, stderr)
    return status, captured.out, captured.err


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shell_script(text):
    """The block as a bash script: tiny options appended to each headstart command, local
    addresses and free ports, and a wait for every background job (its status counts)."""
    ports = {}
    text = re.sub(r"\b\d{1,3}(\.\d{1,3}){3}\b", "127.0.0.1", text)
    text = re.sub(r"(?<=127\.0\.0\.1:)(\d+)", lambda m: str(ports.setdefault(m.group(1), free_port())), text)
    lines = []
    for line in logical_lines(text):
        background = line.endswith("&")
        body = line.rstrip("&").strip()
        match = re.search(r"\bheadstart (\S+)", body)
        if match:
            body = " ".join([body, *map(shlex.quote, tiny(match.group(1), shlex.split(body)))])
        lines.append(body + (" &" if background else ""))
    return "\n".join(["set -euo pipefail", *lines, 'for job in $(jobs -p); do wait "$job"; done', ""])


def run_block_in_a_subprocess(block, workspace):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "KERAS_HOME": str(workspace / "keras_home")}
    done = subprocess.run(["bash", "-c", shell_script(fill_placeholders(block.text, workspace))], cwd=workspace,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"README.md line {block.line}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def run_sh(block, workspace, capsys, monkeypatch):
    commands = logical_lines(fill_placeholders(block.text, workspace))
    if any(line.rstrip().endswith("&") or re.match(r"^[A-Z_]+=", line) for line in commands):
        return run_block_in_a_subprocess(block, workspace)
    for command in commands:
        steps = command.split(" && ")
        if any("pytest" in step for step in steps):
            continue   # the test command: checked against .ci/run above, not run from inside the tests
        while len(steps) > 1 and INSTALL.match(steps[0]):
            steps.pop(0)   # installed already (checked against .ci/run above)
        status, out, err = run_command(steps[-1], workspace, capsys, monkeypatch)
        assert status in (None, 0, 2), (command, status, out[-2000:], err[-2000:])
        if status == 2:
            assert needs_network(headstart_argv(steps[-1])), (command, err)


def expected_pattern(line):
    """A printed line, with any number and any path allowed to differ."""
    parts = []
    for token in re.split(r"(\s+)", line.strip()):
        if token.isspace():
            parts.append(r"\s+")
        elif "/" in token:
            parts.append(r"\S+")
        else:
            parts.extend(r"\d+" if part.isdigit() else re.escape(part) for part in re.split(r"(\d+)", token))
    return re.compile("".join(parts))


def run_text(block, workspace, capsys, monkeypatch):
    lines = fill_placeholders(block.text, workspace).splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("$ ")]
    for start, end in zip(starts, [*starts[1:], len(lines)]):
        command, expected = lines[start][2:], [line for line in lines[start + 1:end] if line.strip()]
        status, out, err = run_command(command, workspace, capsys, monkeypatch)
        printed = (out + err).splitlines()
        for line in expected:
            pattern = expected_pattern(line)
            assert any(pattern.fullmatch(seen.strip()) for seen in printed), (
                f"README.md line {block.line}: `{command}` did not print\n  {line}\nit printed:\n" + "\n".join(printed))
        errors = any(line.startswith("headstart: error:") for line in expected)
        assert (status != 0) == errors, (command, status)


def run_python(block, workspace, capsys, monkeypatch):
    source = fill_placeholders(block.text, workspace)
    for pattern, replacement in TINY_PYTHON:
        source = pattern.sub(replacement, source)
    exec(compile(source, f"README.md:{block.line}", "exec"), {"__name__": "__readme__"})


RUNNERS = {"sh": run_sh, "text": run_text, "python": run_python}


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_readme_block_runs(block, offline_in, capsys, monkeypatch):
    RUNNERS[block.kind](block, offline_in, capsys, monkeypatch)


def test_the_harness_checks_what_it_runs(offline_in, capsys, monkeypatch):
    """The checks above can fail: a wrong expected line, an unknown command, a failing command."""
    wrong = Block(1, "text", "$ headstart list datasets\nno such line is printed", "")
    with pytest.raises(AssertionError, match="did not print"):
        run_text(wrong, offline_in, capsys, monkeypatch)
    with pytest.raises(AssertionError, match="cannot run it"):
        run_sh(Block(1, "sh", "make all", ""), offline_in, capsys, monkeypatch)
    with pytest.raises(AssertionError):
        run_sh(Block(1, "sh", "headstart finetune --dropout 1.5", ""), offline_in, capsys, monkeypatch)
    assert expected_pattern("step 4 of runs/x/NAME: 1e+09").fullmatch("step 12 of /tmp/a/b: 3e+10")
    script = shell_script("A='10.0.0.1:8000 127.0.0.1:12345' headstart pretrain --name two &\nheadstart list models")
    assert "127.0.0.1:8000" not in script and "10.0.0.1" not in script and "127.0.0.1:12345" not in script
    assert "headstart pretrain --name two --image-size 8 --epochs 1 &" in script and "wait" in script
