"""Reading only regular files, without blocking; writing atomically through ``.partial/``."""

from __future__ import annotations

import os

import pytest

from gradcam_widget.auditing import store_io


def test_json_is_written_atomically_and_read_back(tmp_path):
    store_io.write_json(tmp_path, "x.json", {"a": [1, 2], "b": None})
    assert store_io.read_json(tmp_path / "x.json") == {"a": [1, 2], "b": None}
    assert not any((tmp_path / ".partial").iterdir())  # moved into place, nothing left
    with pytest.raises(ValueError, match="longer than 4 bytes"):
        store_io.read_json(tmp_path / "x.json", limit=4)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        store_io.read_json(tmp_path / "deep.json")


def test_what_is_no_regular_file_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block
    with pytest.raises(store_io.NotRegularFile, match="a FIFO"):
        store_io.open_regular(fifo)
    with pytest.raises(store_io.NotRegularFile, match="a folder"):
        store_io.read_json(tmp_path)
    assert store_io.kind_of(os.stat(tmp_path).st_mode) == "a folder"


def test_one_line_of_an_error():
    assert store_io.one_line(ValueError("two\n  lines")) == "two lines"
    assert store_io.one_line(ValueError()) == "ValueError"
    assert len(store_io.one_line(ValueError("x" * 1000))) == 300
