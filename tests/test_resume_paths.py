"""`--resume` compares paths resolved: two spellings of one folder are one run; another folder is not."""

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
