"""`--resume` compares paths resolved: two spellings of one folder are one run; another folder is not."""

import json

import pytest

from headstart.recipes import resume
from headstart.recipes.cli import options_for
from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import RunDir


def test_two_spellings_of_the_same_paths_resume_and_another_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("images", "other", "cache"):
        (tmp_path / folder).mkdir()
    started = options_for("pretrain", name="r", runs_dir="runs", data="./images", data_dir="cache")
    run_dir = RunDir.create("pretrain", "r", "runs")
    resume.start(run_dir, started, "pretrain")

    monkeypatch.chdir(tmp_path / "other")   # another working directory, the paths spelled absolute
    same = options_for("pretrain", name="r", runs_dir=str(tmp_path / "runs"), data=str(tmp_path / "images"),
                       data_dir=str(tmp_path / "cache/"), resume=True)
    resume.check(same, "pretrain", tmp_path / "runs" / "pretrain" / "r")

    (tmp_path / "link").symlink_to(tmp_path / "images")
    via_link = options_for("pretrain", name="r", runs_dir="../runs", data="../link", data_dir="../cache", resume=True)
    resume.check(via_link, "pretrain", tmp_path / "runs" / "pretrain" / "r")

    another = options_for("pretrain", name="r", runs_dir="../runs", data="../other", data_dir="../cache", resume=True)
    with pytest.raises(UsageError, match="was started with data='./images', not '../other'"):
        resume.check(another, "pretrain", tmp_path / "runs" / "pretrain" / "r")


def test_a_resumed_search_compares_its_paths_resolved_too(tmp_path, monkeypatch):
    from headstart.recipes import tune

    monkeypatch.chdir(tmp_path)
    for folder in ("cache", "other", "elsewhere"):
        (tmp_path / folder).mkdir()
    started = options_for("tune", weights="none", runs_dir="runs", name="s", cache_dir="./cache")
    tune.validate(started)
    folder = tmp_path / "runs" / "tune" / "s"
    folder.mkdir(parents=True)
    (folder / tune.SEARCH_FILE).write_text(json.dumps(tune.saved_search(started)))

    monkeypatch.chdir(tmp_path / "other")   # the same folder, spelled from another working directory
    tune.validate(options_for("tune", weights="none", runs_dir="../runs", name="s", cache_dir="../cache",
                              resume=True))
    with pytest.raises(UsageError, match="was started with --cache-dir ./cache, not ../elsewhere"):
        tune.validate(options_for("tune", weights="none", runs_dir="../runs", name="s", cache_dir="../elsewhere",
                                  resume=True))
