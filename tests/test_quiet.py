"""The quiet import (:mod:`gradcam_widget._quiet`): what a library writes to file descriptor 2
inside the block is dropped, and fd 2 is back afterwards, also after an error."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os
from gradcam_widget._quiet import silenced_stderr_fd
with silenced_stderr_fd():
    os.write(2, b"noise from a C library\\n")
try:
    with silenced_stderr_fd():
        raise KeyError("inside")
except KeyError:
    pass
os.write(2, b"after\\n")
"""


def test_fd2_is_silenced_in_the_block_and_restored_after_it():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": root},
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stderr == b"after\n"
