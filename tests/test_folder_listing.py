"""An image folder lists each file once, whatever its links: no cycle walked, no file counted twice
(so one image cannot land in the training and the test split at once)."""

import os

import numpy as np
from PIL import Image

from headstart.recipes.data.folder import list_images


def test_each_file_is_listed_once_whatever_the_links(tmp_path):
    for class_name in ("cats", "dogs"):
        (tmp_path / class_name / "sub").mkdir(parents=True)
        for index in range(2):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / class_name / f"{index}.png")
    os.symlink("..", tmp_path / "cats" / "sub" / "loop")                    # a cycle back up the tree
    os.symlink(tmp_path / "cats", tmp_path / "cats" / "sub" / "again")      # the class folder a second time
    os.symlink("../../cats/0.png", tmp_path / "dogs" / "sub" / "cat.png")   # one file in two classes
    os.symlink("missing.png", tmp_path / "dogs" / "broken.png")             # a link to nothing
    names, paths, labels = list_images(tmp_path)
    assert names == ["cats", "dogs"]
    assert [os.path.relpath(path, tmp_path) for path in paths] == ["cats/0.png", "cats/1.png", "dogs/0.png", "dogs/1.png"]
    assert list(labels) == [0, 0, 1, 1]


def _folder_of(tmp_path, files):
    for relative, content in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / relative)
        else:
            (tmp_path / relative).write_bytes(content)
    return tmp_path


def test_a_folder_where_nothing_decodes_says_so_in_one_line(tmp_path):
    import pytest

    from headstart.recipes import data
    from headstart.recipes.errors import UsageError

    folder = _folder_of(tmp_path, {f"{name}/{index}.png": b"not an image" for name in "ab" for index in range(4)})
    with pytest.raises(UsageError) as caught:
        data.load(str(folder), image_size=8)
    message = str(caught.value)
    # Not "the val split is empty", which is what an empty folder after the scan used to say.
    assert "none of its 8 image files can be used" in message and "cannot decode it as an image" in message
    assert "\n" not in message


def test_an_unreadable_file_is_named_as_unreadable_not_as_a_bad_image(tmp_path, monkeypatch):
    import builtins

    import pytest

    from headstart.recipes import data
    from headstart.recipes.data import folder as image_folder

    folder = _folder_of(tmp_path, {f"{name}/{index}.png": None for name in "ab" for index in range(6)})
    locked = str(folder / "a" / "0.png")

    # The tests run as root, whom file permissions do not stop: the refusal is injected where
    # the scan opens the file, as the operating system would raise it.
    def open_as_a_user(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(image_folder, "open", open_as_a_user, raising=False)
    assert image_folder.undecodable([locked]) == ["cannot read it (Permission denied; fix its permissions)"]
    with pytest.warns(data.SkippedImageWarning, match=r"0\.png: cannot read it \(Permission denied"):
        splits = data.load(str(folder), image_size=8, validation_fraction=0.25, test_fraction=0)
    assert sum(splits.num_examples.values()) == 11
