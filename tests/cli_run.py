"""The command line run in this process, for the CLI's tests (``tests/test_main.py``,
``tests/commands/``, ``tests/explorer/test_app.py``)."""

from __future__ import annotations

from gradcam_widget.__main__ import main


def run(capfd, *argv):
    """``main(argv)`` in this process: ``(exit status, stdout, stderr lines)``, both read at
    the file-descriptor level, so log lines TensorFlow's C++ side writes would show too."""
    status = main(list(argv))
    captured = capfd.readouterr()
    return status, captured.out, captured.err.splitlines()


def assert_one_error_line(status, out, err, *expected):
    """Exit status 2, nothing on stdout, one ``error: ...`` line holding each ``expected``."""
    assert status == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    for text in expected:
        assert text in err[0]
