"""Names and messages as the package prints them (:mod:`gradcam_widget._text`): one line, no
name able to forge one."""

from __future__ import annotations

from pathlib import Path

from gradcam_widget._text import one_line, printable, shown


def test_names_escape_only_when_they_must():
    assert shown(Path("/tmp/my photo.png")) == "/tmp/my photo.png"
    assert shown("a\nb.png") == "'a\\nb.png'"
    assert shown("\x1b[31mred.png") == "'\\x1b[31mred.png'"
    assert shown("'quoted'.png") == "\"'quoted'.png\""  # a leading quote: always a repr
    assert shown(" space.png") == "' space.png'"
    assert printable("bad\rline\x07") == "bad\\rline\\x07"


def test_errors_are_one_line():
    assert one_line(ValueError("bad\n  value")) == "bad value"
    assert one_line(FileNotFoundError("no file")) == "no file"
    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first second"
    assert one_line(KeyError()) == "KeyError"
