"""The command line's dispatch (``gradcam_widget.__main__``): every command registered, every
error one line with exit status 2, in-process and in a real subprocess. The commands' own tests
are in ``tests/commands/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import assert_one_error_line, run

from gradcam_widget.__main__ import main
from gradcam_widget.data import images, models
from gradcam_widget.data import scenes as data

ROOT = Path(__file__).resolve().parents[1]


def test_no_command_is_one_line(capfd):
    assert_one_error_line(*run(capfd), "required: command")


def test_unavailable_weights_are_one_line(tmp_path, capfd, monkeypatch):
    """The real download path, against a closed local port (so it also fails online)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_APPLICATIONS_URL", "http://127.0.0.1:9/")
    result = run(capfd, "demo", "--model", "mobilenet_v2", "--out", str(tmp_path / "v.png"))
    assert_one_error_line(*result, "ImageNet weights for 'mobilenet_v2' are not available")


def test_a_photo_sample_without_scikit_image_is_one_line(tmp_path, capfd, monkeypatch):
    """``None`` in ``sys.modules`` makes ``import skimage.data`` fail as if not installed."""
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    result = run(capfd, "demo", "--image", "cat", "--out", str(tmp_path / "cat.png"))
    assert_one_error_line(*result, "sample 'cat' needs scikit-image: pip install scikit-image")


def test_unexpected_errors_are_one_line_with_their_type(tmp_path, capfd, monkeypatch):
    def fails(image):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(images, "as_rgb_image", fails)
    result = run(capfd, "demo", "--out", str(tmp_path / "v.png"))
    assert_one_error_line(*result, "error: RuntimeError: first line second line")


def test_keyboard_interrupt_keeps_its_traceback(tmp_path, monkeypatch):
    def interrupted(image):
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "as_rgb_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["demo", "--out", str(tmp_path / "v.png")])


def test_a_real_process_prints_one_error_line_and_no_tensorflow_logs(tmp_path):
    """``python -m gradcam_widget demo`` as a user runs it, without TF_CPP_MIN_LOG_LEVEL set:
    importing the package (and TensorFlow) prints nothing, the error is one line, exit 2."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = subprocess.run(
        [sys.executable, "-m", "gradcam_widget", "demo", "--image", "nope.png"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr == (
        "error: no image file 'nope.png' and no sample of that name; samples: "
        f"{', '.join(data.SAMPLES)}\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_every_command_is_registered_and_runs_its_module():
    from gradcam_widget.__main__ import COMMANDS, build_parser
    from gradcam_widget.commands import audit, pictures, serve, static

    assert (pictures, audit, static, serve) == COMMANDS
    parser = build_parser()
    expected = {"demo": pictures.demo, "saliency": pictures.saliency, "audit": audit.audit,
                "export": static.export, "app": serve.app, "fetch": serve.fetch}  # fmt: skip
    for command, body in expected.items():
        argv = [command] + {"audit": ["scenes:0-1"], "fetch": ["shapes"]}.get(command, [])
        args = parser.parse_args(argv)
        assert args.command == command and args.run is body, command


def test_a_usage_error_is_a_value_error_and_one_line(capfd):
    from gradcam_widget.__main__ import UsageError

    assert issubclass(UsageError, ValueError)
    assert_one_error_line(*run(capfd, "nope"), "invalid choice: 'nope'", "--help")
