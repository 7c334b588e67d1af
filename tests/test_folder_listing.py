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
