"""The release a user installs: an sdist and a wheel built from this checkout, checked by
``twine check --strict``, the wheel's files listed, then the wheel installed into a fresh virtual
environment outside the repository and its command line and models used from there.

The build runs on a copy of the checkout (the files git sees: tracked, and untracked ones that
are not ignored) in a temporary folder, so it writes nothing into the checkout (no ``build/``,
no ``*.egg-info``, no ``dist/``). ``python -m build`` with no ``--sdist``/``--wheel`` makes the
sdist, then the wheel *from the unpacked sdist*: the wheel is what ``pip install`` of the sdist
would build, so a file missing from the sdist shows up as one missing from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import gradcam_widget as gw

ROOT = Path(__file__).resolve().parents[2]
VERSION = gw.__version__
SHIPPED_MODELS = ("shapes", "shapes_permuted", "shapes_shortcut", "shapes_vit")
LEFT_OUT = ("tests/", "benchmarks/", "notebooks/", "docs/", "scripts/")
"""What the wheel must not hold (paths inside the wheel)."""
HEAVY = ("gradcam_widget", "tensorflow", "keras", "jax", "torch")
"""Packages a build must not import: the version is read from ``_version.py`` statically."""

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("build") is None or importlib.util.find_spec("twine") is None,
    reason="needs the release extra: pip install 'gradcam_widget[release]' (build, twine)",
)

# Put first on PYTHONPATH for the build, this sitecustomize notes each process it starts in
# and every import of HEAVY that is attempted there (and refuses it), so the test can tell that
# the build ran under it and imported none of them.
GUARD = """\
import os, sys

_DIR = os.environ["GW_BUILD_GUARD_DIR"]
_REFUSED = set(os.environ["GW_BUILD_GUARD_REFUSE"].split(","))
with open(os.path.join(_DIR, "processes.txt"), "a") as _file:
    _file.write(f"{os.getpid()} {sys.argv[0]}\\n")


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _REFUSED:
            with open(os.path.join(_DIR, "imported.txt"), "a") as file:
                file.write(name + "\\n")
            raise ImportError(f"a build must not import {name}")
        return None


sys.meta_path.insert(0, _Refuse())
"""


def _run(args, *, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``args``; a non-zero exit fails the test with the command's output."""
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )
    return done


def _checkout_files() -> list[str]:
    """The checkout's files as git sees them (tracked, and untracked ones not ignored), read
    from the working tree; without git, every file but the usual junk."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = _run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
        ).stdout
        names = sorted(set(listed.split("\0")) - {""})
    else:
        junk = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
        names = sorted(
            path.relative_to(ROOT).as_posix()
            for path in ROOT.rglob("*")
            if not junk.intersection(path.relative_to(ROOT).parts)
            and not path.name.endswith(".egg-info")
        )
    # a file deleted in the working tree, a folder (a nested repository) or a dangling link: not
    # part of what would be built
    return [name for name in names if (ROOT / name).is_file()]


def _clean_env(**extra) -> dict[str, str]:
    """This process's environment without what would steer another Python to this checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """``(sdist, wheel, source files)``: built from a copy of the checkout."""
    work = tmp_path_factory.mktemp("release")
    assert not work.resolve().is_relative_to(ROOT)
    source, guard, dist = work / "source", work / "guard", work / "dist"
    files = _checkout_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    # --no-isolation: the build backend is this virtual environment's setuptools (build checks
    # it against pyproject's requires, setuptools>=77) instead of a fresh one that pip fetches
    # from the package index into a new environment for the sdist and again for the wheel: so
    # no network (an offline or flaky index cannot fail the test), the same setuptools on every
    # run, and ~5 s instead of ~16 s here. An isolated build is what a release machine does;
    # it was checked to give a wheel with the same files.
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source],
        env=_clean_env(
            PYTHONPATH=str(guard),
            GW_BUILD_GUARD_DIR=str(guard),
            GW_BUILD_GUARD_REFUSE=",".join(HEAVY),
        ),
    )
    processes = (guard / "processes.txt").read_text().splitlines()
    assert len(processes) >= 3, processes  # the frontend, and the backend for sdist and wheel
    imported = guard / "imported.txt"
    assert not imported.exists(), f"the build imported: {imported.read_text().split()}"
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return sdist, wheel, files


def test_the_names_carry_the_version(release):
    sdist, wheel, _ = release
    assert sdist.name == f"gradcam_widget-{VERSION}.tar.gz"
    assert wheel.name == f"gradcam_widget-{VERSION}-py3-none-any.whl"


def test_twine_check_strict_passes(release):
    sdist, wheel, _ = release
    done = _run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_holds_the_package_and_nothing_else(release):
    _, wheel, files = release
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"gradcam_widget-{VERSION}.dist-info/entry_points.txt")
        metadata = archive.read(f"gradcam_widget-{VERSION}.dist-info/METADATA").decode()
    for model in SHIPPED_MODELS:
        assert f"gradcam_widget/assets/{model}.keras" in names
        assert f"gradcam_widget/assets/{model}.json" in names
    assert "gradcam_widget/classroom/page.py" in names
    assert "gradcam_widget/__main__.py" in names
    # every file of the package in the checkout (each subpackage, every non-.py file) is in
    # the wheel, and the wheel has no other file of the package
    package = {
        name
        for name in files
        if name.startswith("gradcam_widget/") and "__pycache__" not in name.split("/")
    }
    assert {name for name in names if name.startswith("gradcam_widget/")} == package
    assert {name.split("/")[0] for name in names} == {
        "gradcam_widget",
        f"gradcam_widget-{VERSION}.dist-info",
    }
    assert not [name for name in names if name.startswith(LEFT_OUT)]
    assert not [name for name in names if name.endswith((".pyc", ".pyo"))]
    assert "[console_scripts]\ngradcam-widget = gradcam_widget.__main__:main" in (
        entry_points.decode()
    )
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nDescription-Content-Type: text/markdown\n" in metadata


def test_the_sdist_holds_the_source_and_no_junk(release):
    sdist, _, files = release
    top = f"gradcam_widget-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = {member.name.removeprefix(top) for member in archive.getmembers()}
    for name in ("pyproject.toml", "README.md", "LICENSE", "gradcam_widget/_version.py"):
        assert name in names
    if "CHANGELOG.md" in files:
        assert "CHANGELOG.md" in names
    for model in SHIPPED_MODELS:
        assert f"gradcam_widget/assets/{model}.keras" in names
    junk = [
        name
        for name in names
        if name.startswith((".venv", "build/", "dist/", ".git", ".pytest_cache", *LEFT_OUT))
        or "__pycache__" in name
        or name.endswith((".pyc", ".pyo"))
    ]
    assert not junk


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(release, tmp_path):
    """A fresh venv, the wheel installed with ``--no-deps``; the third-party packages come from
    this venv through a ``.pth`` line (no download, no second copy of TensorFlow)."""
    if sys.platform == "win32":
        pytest.skip("the venv layout below is POSIX's (bin/)")
    _, wheel, _ = release
    assert not tmp_path.resolve().is_relative_to(ROOT)
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python, command = venv / "bin" / "python", venv / "bin" / "gradcam-widget"
    # This venv's pip, run for the new interpreter (pip --python): it installs into the new venv
    # and, as the .pth below is not written yet, sees no other gradcam_widget there.
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps"]
        + ["--disable-pip-version-check", "--no-input", "--quiet", wheel],
        env=_clean_env(),
    )
    own_site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            env=_clean_env(),
        ).stdout.strip()
    )
    # A path line of a .pth is appended to sys.path after the new venv's own site-packages,
    # and the .pth files in that folder (this venv's editable finder of the checkout among
    # them) are not processed: only a site directory's own .pth files are.
    parents = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (own_site / "gw_parent_venv.pth").write_text("".join(f"{path}\n" for path in parents))
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env["VIRTUAL_ENV"] = str(venv)

    # the package, its metadata and its models come from the new venv, not from the checkout
    probe = _run(
        [
            python,
            "-c",
            "import importlib.metadata, json, sys; import gradcam_widget as gw; "
            "print(gw.__file__); entry = gw.models.load('shapes_vit'); "
            "dist = importlib.metadata.distribution('gradcam_widget'); "
            "print(json.dumps({'file': gw.__file__, 'version': gw.__version__, "
            "'dist': str(dist.locate_file('')), 'dist_version': dist.version, "
            "'path': sys.path, 'finders': [getattr(f, '__module__', '') for f in sys.meta_path], "
            "'classes': list(entry.class_names)}))",
        ],
        cwd=work,
        env=env,
    )
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    gw_file = Path(facts["file"]).resolve()
    assert gw_file == (own_site / "gradcam_widget" / "__init__.py").resolve()
    assert not gw_file.is_relative_to(ROOT)
    assert Path(facts["dist"]).resolve() == own_site.resolve()
    assert facts["version"] == facts["dist_version"] == VERSION
    path = [str(Path(entry).resolve()) for entry in facts["path"] if entry]
    assert path.index(str(own_site.resolve())) < min(
        path.index(str(Path(parent).resolve())) for parent in parents
    )
    assert str(ROOT) not in path
    assert not [finder for finder in facts["finders"] if "__editable__" in finder]
    assert facts["classes"] == ["circle", "square", "triangle", "star", "cross"]

    demo = work / "demo.png"
    _run([command, "demo", "--out", demo], cwd=work, env=env)
    assert demo.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lesson = work / "lesson.html"
    _run(
        [command, "export", "--model", "shapes", "--image", "two_shapes"]
        + ["--methods", "gradcam", "--out", lesson],
        cwd=work,
        env=env,
    )
    page = lesson.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/jpeg;base64,") > 10

    app = _run([command, "app", "--help"], cwd=work, env=env)
    assert app.stdout.startswith("usage:") and "--allow-host" in app.stdout
