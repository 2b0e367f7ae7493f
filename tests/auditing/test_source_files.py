"""Sources of image files: paths and folders, what tells a file is readable, and whether it
changed since it was read."""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from gradcam_widget.auditing import source_files, sources
from gradcam_widget.data import scenes as data


def test_a_folder_matching_two_classes_by_case_only_is_ambiguous():
    names = ("Star", "star", "circle")
    matched, unmatched = source_files.match_folders(["Star", "STAR", "Circle", "cross"], names)
    assert matched == {"Circle": "circle"}  # "Star" is exact; "STAR" could be either
    assert set(unmatched) == {"STAR", "cross"}
    assert "'Star' and 'star'" in unmatched["STAR"] and "ambiguous" in unmatched["STAR"]


def test_a_folder_numbers_its_images_by_sorted_path_and_labels_them(tmp_path):
    for name, seed in (("star/b.png", 2), ("circle/a.png", 1), ("star/a.PNG", 3)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(data.scene(1_000_000 + seed, n_objects=1).image).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    folder = source_files.Folder(tmp_path, labels="folders")
    folder.set_class_names(data.CLASS_NAMES)
    assert len(folder) == 3
    items = list(folder.items(0, 3))
    assert [item.id for item in items] == ["circle/a.png", "star/a.PNG", "star/b.png"]
    assert [item.true_label for item in items] == ["circle", "star", "star"]
    assert all(item.error is None and item.image.shape[-1] == 3 for item in items)
    assert folder.label_of(0) == {"true_class": data.CLASS_NAMES.index("circle"),
                                  "true_label": "circle"}  # fmt: skip


def test_file_problem_names_what_is_no_file_without_opening_it(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert source_files.file_problem(image) is None
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert "FIFO" in source_files.file_problem(fifo)
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")
    assert "broken" in source_files.file_problem(tmp_path / "broken.png")


def test_a_files_fingerprint_changes_with_its_content(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    first = source_files.file_fingerprint(path)
    assert source_files.file_fingerprint(path) == first
    stat = path.stat()
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time: the hash tells
    assert source_files.file_fingerprint(path) != first
    paths = sources.Paths([path])
    before = paths.fingerprint()
    time.sleep(0.01)
    path.write_bytes(path.read_bytes() + b"\0")
    assert sources.Paths([path]).fingerprint() != before
